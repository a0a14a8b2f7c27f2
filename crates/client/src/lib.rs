//! The Rust client of the bucket-streamer WebSocket protocol
//! (docs/protocol.md): `bench`, its dragging mode and the tests all speak
//! through it, so what one of them learns about the wire holds for all.

mod session;

pub use session::{session_url, Answer, Incoming, Receiver, Sender, Session};
