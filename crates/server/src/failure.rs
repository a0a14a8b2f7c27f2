//! Why a request failed, as one enum: its wire code (`FrameError.error`,
//! the HTTP body's `error`, the `reason` label of
//! `bucket_streamer_frame_errors_total`) and its HTTP status live here
//! instead of in strings matched in several places (docs/protocol.md lists
//! them).

use axum::http::StatusCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The offset is not the start of a frame (or a sample an edit list hides).
    NotAFrame,
    OffsetOutOfRange,
    /// The frame lies in the missing part of a recording cut short.
    Truncated,
    InvalidIrap,
    InvalidRequest,
    /// More bytes or time than allowed.
    TooLarge,
    /// The decoder cannot reconstruct the frame from the stream.
    NotDecodable,
    DecodeFailed,
    EncodeFailed,
    StorageError,
    NotFound,
    InvalidPath,
    NotAVideo,
    Corrupt,
    /// A limit of the process (open videos, decoders) refused it for now.
    Busy,
    /// A newer `latest` request replaced it.
    Superseded,
    /// The client cancelled it.
    Cancelled,
    QueueFull,
    TooManyFrames,
    NoVideo,
    Forbidden,
    Internal,
}

impl Failure {
    /// The code on the wire.
    pub fn code(self) -> &'static str {
        match self {
            Failure::NotAFrame => "not_a_frame",
            Failure::OffsetOutOfRange => "offset_out_of_range",
            Failure::Truncated => "truncated",
            Failure::InvalidIrap => "invalid_irap",
            Failure::InvalidRequest => "invalid_request",
            Failure::TooLarge => "too_large",
            Failure::NotDecodable => "not_decodable",
            Failure::DecodeFailed => "decode_failed",
            Failure::EncodeFailed => "encode_failed",
            Failure::StorageError => "storage_error",
            Failure::NotFound => "not_found",
            Failure::InvalidPath => "invalid_path",
            Failure::NotAVideo => "not_a_video",
            Failure::Corrupt => "corrupt",
            Failure::Busy => "busy",
            Failure::Superseded => "superseded",
            Failure::Cancelled => "cancelled",
            Failure::QueueFull => "queue_full",
            Failure::TooManyFrames => "too_many_frames",
            Failure::NoVideo => "no_video",
            Failure::Forbidden => "forbidden",
            Failure::Internal => "internal",
        }
    }

    /// The status of an HTTP answer with this failure.
    pub fn http_status(self) -> StatusCode {
        match self {
            Failure::NotAFrame | Failure::OffsetOutOfRange | Failure::Truncated | Failure::NotFound => {
                StatusCode::NOT_FOUND
            }
            Failure::InvalidIrap | Failure::InvalidRequest | Failure::InvalidPath | Failure::NoVideo => {
                StatusCode::BAD_REQUEST
            }
            Failure::TooLarge | Failure::NotDecodable | Failure::NotAVideo | Failure::Corrupt => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Failure::StorageError => StatusCode::BAD_GATEWAY,
            Failure::Busy | Failure::QueueFull | Failure::TooManyFrames => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Forbidden => StatusCode::FORBIDDEN,
            Failure::Superseded | Failure::Cancelled => StatusCode::CONFLICT,
            Failure::DecodeFailed | Failure::EncodeFailed | Failure::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Why a requested frame was not served: the failure for programs and a
/// sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameFailure {
    pub failure: Failure,
    pub message: String,
}

impl FrameFailure {
    pub fn new(failure: Failure, message: impl Into<String>) -> Self {
        Self { failure, message: message.into() }
    }

    pub fn code(&self) -> &'static str {
        self.failure.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        let protocol = include_str!("../../../docs/protocol.md");
        for failure in [
            Failure::NotAFrame,
            Failure::OffsetOutOfRange,
            Failure::Truncated,
            Failure::InvalidIrap,
            Failure::InvalidRequest,
            Failure::TooLarge,
            Failure::NotDecodable,
            Failure::DecodeFailed,
            Failure::StorageError,
            Failure::Superseded,
            Failure::Cancelled,
            Failure::QueueFull,
            Failure::TooManyFrames,
            Failure::NoVideo,
            Failure::Forbidden,
        ] {
            assert!(
                protocol.contains(&format!("`{}`", failure.code())),
                "{} is not in docs/protocol.md",
                failure.code()
            );
        }
        assert_eq!(Failure::Truncated.http_status(), StatusCode::NOT_FOUND);
        assert_eq!(Failure::StorageError.http_status(), StatusCode::BAD_GATEWAY);
    }
}
