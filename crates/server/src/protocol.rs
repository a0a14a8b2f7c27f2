//! The WebSocket wire contract (see docs/protocol.md): client commands are
//! parsed leniently per frame, so one bad frame entry is answered on its own
//! instead of losing the whole request; server messages serialise to the
//! Stage 1 shapes with additive fields only.

use serde::Serialize;
use serde_json::Value;

/// A parsed client message.
#[derive(Debug)]
pub enum Command {
    SetVideo {
        path: String,
    },
    /// `mode`: queue mode (extension), checked by the session.
    RequestFrames {
        frames: Vec<FrameRequest>,
        mode: Option<String>,
    },
    /// Answers everything queued in the session with `cancelled` (extension).
    Cancel,
    /// Names IRAP sections the client will want; their bytes are preloaded (extension).
    RegisterChunks {
        chunks: Vec<ChunkSpec>,
    },
    /// Every frame of one IRAP section, as a request (extension).
    RequestChunk {
        irap_offset: u64,
        request_id: Option<Value>,
        mode: Option<String>,
    },
}

/// An IRAP section: the IRAP's offset and, optionally, the frames of it the
/// client wants (all frames of the GOP when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpec {
    pub irap_offset: u64,
    pub frames: Option<Vec<u64>>,
}

/// One requested frame. `label` is the client's `index`, echoed back.
#[derive(Debug, Clone)]
pub struct FrameRequest {
    pub label: Value,
    /// The request's `id`, echoed as `request_id` (extension; absent for Stage 1 clients).
    pub request_id: Option<Value>,
    /// The frame's byte offset, or why the entry is unusable.
    pub offset: Result<u64, String>,
    pub irap_offset: Option<u64>,
    /// The video this frame is of (extension: several clips on one
    /// session); the session's current video when absent.
    pub video: Option<String>,
    /// The request's `output` (extension): size, format and quality, as
    /// sent; checked against the server's defaults by the session.
    pub output: OutputRequest,
}

/// A request's `output` object as sent (every field optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputRequest {
    pub format: Option<media::output::Format>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub quality: Option<u8>,
}

impl OutputRequest {
    /// The checked settings, with the server's JPEG quality as the default.
    pub fn resolve(&self, jpeg_quality: u8) -> Result<media::output::Output, String> {
        media::output::Output::new(self.format, self.width, self.height, self.quality, jpeg_quality)
            .map_err(|reason| format!("invalid output: {reason}"))
    }
}

/// Reads an `output` object: only its known fields, each of its type.
fn parse_output(value: Option<&Value>) -> Result<OutputRequest, String> {
    let fields = match value {
        None | Some(Value::Null) => return Ok(OutputRequest::default()),
        Some(Value::Object(fields)) => fields,
        Some(other) => return Err(format!("\"output\" must be an object, not {other}")),
    };
    let number = |name: &str, max: u64| -> Result<Option<u64>, String> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= max)
                .map(Some)
                .ok_or_else(|| format!("output \"{name}\" must be an integer up to {max}, not {v}")),
        }
    };
    if let Some(unknown) = fields.keys().find(|k| !["format", "width", "height", "quality"].contains(&k.as_str())) {
        return Err(format!("unknown output option \"{unknown}\" (known: format, width, height, quality)"));
    }
    let format = match fields.get("format") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.parse().map_err(|e| format!("output {e}"))?),
        Some(other) => return Err(format!("output \"format\" must be a string, not {other}")),
    };
    Ok(OutputRequest {
        format,
        width: number("width", u64::from(u32::MAX))?.map(|n| n as u32),
        height: number("height", u64::from(u32::MAX))?.map(|n| n as u32),
        quality: number("quality", 255)?.map(|n| n as u8),
    })
}

impl FrameRequest {
    /// The offset to echo in answers (0 when the entry had none).
    pub fn echoed_offset(&self) -> u64 {
        *self.offset.as_ref().unwrap_or(&0)
    }
}

/// Parses one text message; the error is the `Error.message` to send.
pub fn parse(text: &str) -> Result<Command, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("malformed message: {e}"))?;
    let kind = match value.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err("malformed message: \"type\" must be a string".into()),
        None => return Err("malformed message: missing \"type\"".into()),
    };
    match kind {
        "SetVideo" => match value.get("path") {
            Some(Value::String(path)) => Ok(Command::SetVideo { path: path.clone() }),
            _ => Err("invalid SetVideo: \"path\" must be a string".into()),
        },
        "RequestFrames" => parse_request_frames(&value),
        "Cancel" => Ok(Command::Cancel),
        "RegisterChunks" => parse_register_chunks(&value),
        "RequestChunk" => {
            let irap_offset = optional_offset(value.get("irap_offset"), "irap_offset")
                .map_err(|e| format!("invalid RequestChunk: {e}"))?
                .ok_or("invalid RequestChunk: \"irap_offset\" is required")?;
            let request_id = value.get("id").filter(|id| !id.is_null()).cloned();
            Ok(Command::RequestChunk { irap_offset, request_id, mode: mode_of(&value) })
        }
        other => Err(format!("unknown message type: {other}")),
    }
}

fn optional_offset(value: Option<&Value>, field: &str) -> Result<Option<u64>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| format!("\"{field}\" must be a non-negative integer, not {v}")),
    }
}

fn parse_request_frames(value: &Value) -> Result<Command, String> {
    let Some(Value::Array(entries)) = value.get("frames") else {
        return Err("invalid RequestFrames: \"frames\" must be an array".into());
    };
    let shared_irap = optional_offset(value.get("irap_offset"), "irap_offset");
    let shared_video = optional_video(value.get("video"));
    let request_id = value.get("id").filter(|id| !id.is_null()).cloned();
    let output = parse_output(value.get("output"));
    let frames = entries
        .iter()
        .enumerate()
        .map(|(position, entry)| {
            let label = entry.get("index").cloned().unwrap_or(Value::from(position));
            let offset = match entry.get("offset") {
                Some(v) => v.as_u64().ok_or_else(|| format!("\"offset\" must be a non-negative integer, not {v}")),
                None => Err("the frame has no \"offset\"".to_string()),
            };
            let irap = inherit(optional_offset(entry.get("irap_offset"), "irap_offset"), &shared_irap);
            let video = inherit(optional_video(entry.get("video")), &shared_video);
            let (offset, irap_offset, video, output) = match (offset, irap, video, output.clone()) {
                (Ok(offset), Ok(irap_offset), Ok(video), Ok(output)) => (Ok(offset), irap_offset, video, output),
                (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
                    (Err(e), None, None, OutputRequest::default())
                }
            };
            FrameRequest { label, request_id: request_id.clone(), offset, irap_offset, video, output }
        })
        .collect();
    Ok(Command::RequestFrames { frames, mode: mode_of(value) })
}

/// A frame's own value of a field, else the request's.
fn inherit<T: Clone>(own: Result<Option<T>, String>, shared: &Result<Option<T>, String>) -> Result<Option<T>, String> {
    match own? {
        Some(value) => Ok(Some(value)),
        None => shared.clone(),
    }
}

fn optional_video(value: Option<&Value>) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(path)) => Ok(Some(path.clone())),
        Some(other) => Err(format!("\"video\" must be a path string, not {other}")),
    }
}

fn mode_of(value: &Value) -> Option<String> {
    match value.get("mode") {
        None | Some(Value::Null) => None,
        Some(Value::String(mode)) => Some(mode.clone()),
        Some(other) => Some(other.to_string()),
    }
}

fn parse_register_chunks(value: &Value) -> Result<Command, String> {
    let Some(Value::Array(entries)) = value.get("chunks") else {
        return Err("invalid RegisterChunks: \"chunks\" must be an array".into());
    };
    let chunks = entries
        .iter()
        .map(|entry| {
            let irap_offset = optional_offset(entry.get("irap_offset"), "irap_offset")?
                .ok_or("every chunk needs an \"irap_offset\"")?;
            let frames = match entry.get("frames") {
                None | Some(Value::Null) => None,
                Some(Value::Array(offsets)) => Some(
                    offsets
                        .iter()
                        .map(|o| {
                            o.as_u64().ok_or_else(|| format!("frame offsets must be non-negative integers, not {o}"))
                        })
                        .collect::<Result<Vec<u64>, String>>()?,
                ),
                Some(other) => return Err(format!("\"frames\" must be an array of offsets, not {other}")),
            };
            Ok(ChunkSpec { irap_offset, frames })
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| format!("invalid RegisterChunks: {e}"))?;
    Ok(Command::RegisterChunks { chunks })
}

/// Messages the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type")]
pub enum Reply {
    VideoSet {
        path: String,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(flatten)]
        video: Option<VideoSummary>,
    },
    Frame {
        index: Value,
        offset: u64,
        size: usize,
        /// What the bytes are (extension): `jpeg`, `webp` or `png`, and
        /// the size they were encoded at.
        format: &'static str,
        width: u32,
        height: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<Value>,
        /// The frame's video when the request named one (extension).
        #[serde(skip_serializing_if = "Option::is_none")]
        video: Option<String>,
    },
    FrameError {
        index: Value,
        offset: u64,
        error: &'static str,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        video: Option<String>,
    },
    Error {
        message: String,
    },
    /// Answer to `RegisterChunks`: how many sections were registered, and why others were not.
    ChunksRegistered {
        registered: usize,
        rejected: Vec<ChunkRejection>,
    },
}

#[derive(Debug, Serialize)]
pub struct ChunkRejection {
    pub irap_offset: u64,
    pub error: String,
}

/// Facts about a video sent with a successful `VideoSet`.
#[derive(Debug, Serialize)]
pub struct VideoSummary {
    pub frame_count: usize,
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
    pub codec: &'static str,
}

impl Reply {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("replies serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_irap_applies_unless_overridden() {
        let text = r#"{"type":"RequestFrames","irap_offset":1000,
            "frames":[{"offset":1500,"index":0},{"offset":2100,"irap_offset":2000,"index":1}]}"#;
        let Command::RequestFrames { frames, .. } = parse(text).unwrap() else { panic!() };
        assert_eq!(frames[0].irap_offset, Some(1000));
        assert_eq!(frames[1].irap_offset, Some(2000));
        assert_eq!(frames[1].offset, Ok(2100));
        assert_eq!(frames[1].label, Value::from(1));
    }

    #[test]
    fn a_bad_entry_is_kept_for_its_own_answer() {
        let text = r#"{"type":"RequestFrames","frames":[{"offset":-5,"index":7},{"offset":10}]}"#;
        let Command::RequestFrames { frames, .. } = parse(text).unwrap() else { panic!() };
        assert!(frames[0].offset.is_err());
        assert_eq!(frames[0].label, Value::from(7));
        assert_eq!(frames[1].offset, Ok(10));
        assert_eq!(frames[1].label, Value::from(1));
    }

    #[test]
    fn request_ids_are_echoed_only_when_sent() {
        let text = r#"{"type":"RequestFrames","id":"r7","frames":[{"offset":5}]}"#;
        let Command::RequestFrames { frames, .. } = parse(text).unwrap() else { panic!() };
        assert_eq!(frames[0].request_id, Some(Value::from("r7")));
        let request_id = frames[0].request_id.clone();
        let frame = |request_id| Reply::Frame {
            index: Value::from(0),
            offset: 5,
            size: 9,
            format: "jpeg",
            width: 64,
            height: 48,
            request_id,
            video: None,
        };
        assert_eq!(
            frame(request_id).to_text(),
            r#"{"type":"Frame","index":0,"offset":5,"size":9,"format":"jpeg","width":64,"height":48,"request_id":"r7"}"#
        );
        assert_eq!(
            frame(None).to_text(),
            r#"{"type":"Frame","index":0,"offset":5,"size":9,"format":"jpeg","width":64,"height":48}"#
        );
    }

    #[test]
    fn frames_name_their_video_or_inherit_the_request_s() {
        let text = r#"{"type":"RequestFrames","video":"a.mp4",
            "frames":[{"offset":1},{"offset":2,"video":"b.mp4"},{"offset":3,"video":7}]}"#;
        let Command::RequestFrames { frames, .. } = parse(text).unwrap() else { panic!() };
        assert_eq!(frames[0].video.as_deref(), Some("a.mp4"));
        assert_eq!(frames[1].video.as_deref(), Some("b.mp4"));
        assert!(frames[2].offset.as_ref().unwrap_err().contains("video"));
        let reply = Reply::Frame {
            index: Value::from(0),
            offset: 2,
            size: 9,
            format: "png",
            width: 8,
            height: 6,
            request_id: None,
            video: frames[1].video.clone(),
        };
        assert_eq!(
            reply.to_text(),
            r#"{"type":"Frame","index":0,"offset":2,"size":9,"format":"png","width":8,"height":6,"video":"b.mp4"}"#
        );
    }

    #[test]
    fn output_options_are_read_and_bad_ones_fail_every_frame_of_the_request() {
        let text = r#"{"type":"RequestFrames","output":{"width":640,"format":"webp","quality":70},
            "frames":[{"offset":1},{"offset":2}]}"#;
        let Command::RequestFrames { frames, .. } = parse(text).unwrap() else { panic!() };
        let expected = OutputRequest {
            format: Some(media::output::Format::Webp),
            width: Some(640),
            height: None,
            quality: Some(70),
        };
        assert_eq!(frames[1].output, expected);
        assert_eq!(frames[0].output.resolve(80).unwrap().quality, 70);
        for (output, complaint) in [
            (r#"{"widht":640}"#, "unknown output option \"widht\""),
            (r#"{"format":"gif"}"#, "jpeg, webp or png"),
            (r#"{"width":-1}"#, "\"width\" must be an integer"),
            (r#"{"quality":1000}"#, "\"quality\" must be an integer up to 255"),
            (r#""small""#, "\"output\" must be an object"),
        ] {
            let text =
                format!(r#"{{"type":"RequestFrames","output":{output},"frames":[{{"offset":1}},{{"offset":2}}]}}"#);
            let Command::RequestFrames { frames, .. } = parse(&text).unwrap() else { panic!() };
            for frame in &frames {
                let error = frame.offset.as_ref().unwrap_err();
                assert!(error.contains(complaint), "{output}: {error}");
            }
        }
        let text = r#"{"type":"RequestFrames","output":{"format":"png","quality":90},"frames":[{"offset":1}]}"#;
        let Command::RequestFrames { frames, .. } = parse(text).unwrap() else { panic!() };
        assert!(frames[0].output.resolve(80).unwrap_err().contains("not png"));
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(parse("{").unwrap_err().starts_with("malformed message"));
        assert_eq!(parse(r#"{"type":"Dance"}"#).unwrap_err(), "unknown message type: Dance");
        assert!(parse(r#"{"type":"SetVideo"}"#).unwrap_err().contains("path"));
    }

    #[test]
    fn video_set_failure_shape() {
        let reply = Reply::VideoSet { path: "a.mp4".into(), ok: false, error: Some("nope".into()), video: None };
        assert_eq!(reply.to_text(), r#"{"type":"VideoSet","path":"a.mp4","ok":false,"error":"nope"}"#);
    }
}
