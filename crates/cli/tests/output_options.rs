//! Output options over real sockets: frames scaled to fit a box, as PNG
//! (lossless: within rounding of FFmpeg's own RGB decode), WebP and JPEG of
//! a chosen quality, on `/api/v1/frame` and in `RequestFrames`; each option
//! set cached, tagged and answered on its own; bad options refused clearly.

mod common;

use common::{check_scaled, fetch_index, serve_generated, MIN_PSNR};
use serde_json::{json, Value};
use testkit::image::{check_frame, psnr, SmallImage};
use testkit::processes::{http_get, http_get_with};
use testkit::ws::{Answer, Client};

/// PNG against FFmpeg's RGB decode with the stream's matrix and range.
const LOSSLESS_PSNR: f64 = 45.0;
/// A scaled PNG against FFmpeg's decode box-averaged to the same size
/// (measured: 35 dB on the test pattern's sharp edges).
const SCALED_PSNR: f64 = 33.0;
/// A scaled JPEG at the default quality, likewise (measured: 27.8 dB; the
/// full-size one reaches `MIN_PSNR`).
const SCALED_JPEG_PSNR: f64 = 25.0;

fn decode_png(bytes: &[u8]) -> SmallImage {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    pixels.truncate(info.buffer_size());
    SmallImage { width: info.width as usize, height: info.height as usize, pixels }
}

fn decode_webp(bytes: &[u8]) -> SmallImage {
    let image = webp::Decoder::new(bytes).decode().expect("a WebP image");
    assert!(!image.is_alpha());
    SmallImage { width: image.width() as usize, height: image.height() as usize, pixels: image.to_vec() }
}

fn decode_jpeg(bytes: &[u8]) -> SmallImage {
    let rgb = media::jpeg::decode_rgb(bytes).unwrap();
    SmallImage { width: rgb.width, height: rgb.height, pixels: rgb.pixels }
}

#[test]
fn frames_come_scaled_lossless_or_small_and_each_option_set_is_its_own_frame() {
    let names = ["open_gop_bframes.mp4", "main10_bt709.mp4"];
    let (server, _root) = serve_generated("output-options", &names, &[]);
    let port = server.port;
    for name in names {
        let fixture = testkit::fixtures::generated_named(name).unwrap();
        let key = format!("videos/{name}");
        let reference = testkit::reference::frames(&fixture.path, 1).unwrap();
        let (_, index) = fetch_index(&server, &key).unwrap();
        for number in [0usize, 13, 50] {
            let frame = |options: &str| {
                let response = http_get(port, &format!("/api/v1/frame?video={key}&frame={number}{options}")).unwrap();
                assert_eq!(response.status, 200, "{name} {options}: {}", response.text());
                response
            };
            // PNG at the video's size: FFmpeg's own RGB within rounding.
            let png = frame("&format=png");
            assert_eq!(png.header("content-type"), Some("image/png"));
            let lossless = decode_png(&png.body);
            let own = psnr(&lossless, &reference[number]);
            assert!(own >= LOSSLESS_PSNR, "{name} frame {number}: PNG at {own:.1} dB");
            check_frame(&lossless, &reference, number, LOSSLESS_PSNR).unwrap();

            // Scaled: fits the box, keeps the aspect, is the right frame. The
            // lossless one differs from FFmpeg's box-averaged decode only by
            // the filters (area in YUV against box in RGB).
            let small = decode_png(&frame("&width=320&format=png").body);
            assert_eq!((small.width, small.height), (320, 180), "{name}");
            check_scaled(&small, &reference, number, SCALED_PSNR).unwrap_or_else(|e| panic!("{name}: PNG {e}"));
            let small = decode_jpeg(&frame("&width=320").body);
            assert_eq!((small.width, small.height), (320, 180), "{name}");
            check_scaled(&small, &reference, number, SCALED_JPEG_PSNR).unwrap_or_else(|e| panic!("{name}: JPEG {e}"));
            let boxed = decode_png(&frame("&width=1000&height=90&format=png").body);
            assert_eq!((boxed.width, boxed.height), (160, 90), "{name}");
            let never_larger = decode_jpeg(&frame("&width=4000").body);
            assert_eq!((never_larger.width, never_larger.height), (640, 360), "{name}");

            // WebP, and JPEG at a chosen quality: smaller at lower quality.
            let webp = frame("&format=webp&quality=90");
            assert_eq!(webp.header("content-type"), Some("image/webp"));
            let webp_psnr = psnr(&decode_webp(&webp.body), &reference[number]);
            assert!(webp_psnr >= MIN_PSNR, "{name} frame {number}: WebP at {webp_psnr:.1} dB");
            let (rough, fine) = (frame("&quality=20"), frame("&quality=95"));
            assert!(rough.body.len() < fine.body.len());
            check_frame(&decode_jpeg(&rough.body), &reference, number, MIN_PSNR - 6.0).unwrap();

            // Each option set has its own entity tag; the default keeps today's.
            let default = frame("");
            assert_eq!(default.header("content-type"), Some("image/jpeg"));
            let tag = default.header("etag").unwrap().to_string();
            let same = http_get_with(
                port,
                &format!("/api/v1/frame?video={key}&frame={number}"),
                &[("If-None-Match", tag.as_str())],
            )
            .unwrap();
            assert_eq!(same.status, 304);
            let other = http_get_with(
                port,
                &format!("/api/v1/frame?video={key}&frame={number}&format=png"),
                &[("If-None-Match", tag.as_str())],
            )
            .unwrap();
            assert_eq!(other.status, 200, "a PNG must not match the JPEG's tag");
            assert_ne!(png.header("etag"), Some(tag.as_str()));
        }

        // Over the WebSocket: one session asks the same frame three ways;
        // each answer says its format and size and is the HTTP answer's bytes.
        let mut client = Client::connect(&server.ws_url()).unwrap();
        client.set_video(&key).unwrap();
        let target = &index[13];
        let ask = |output: Value| {
            json!({"type": "RequestFrames", "output": output,
                   "frames": [{"offset": target.offset, "irap_offset": target.irap_offset, "index": 13}]})
        };
        for (output, format, size, query) in [
            (Value::Null, "jpeg", (640, 360), ""),
            (json!({"width": 320}), "jpeg", (320, 180), "&width=320"),
            (json!({"format": "png", "height": 90}), "png", (160, 90), "&format=png&height=90"),
            (json!({"format": "webp", "quality": 60}), "webp", (640, 360), "&format=webp&quality=60"),
        ] {
            client.send_json(&ask(output.clone())).unwrap();
            let Answer::Frame { header, jpeg: bytes } = client.receive_answer().unwrap() else {
                panic!("{name} {output}: no frame")
            };
            assert_eq!(header["format"], format, "{header}");
            assert_eq!((header["width"].as_u64(), header["height"].as_u64()), (Some(size.0), Some(size.1)));
            let over_http = http_get(port, &format!("/api/v1/frame?video={key}&frame=13{query}")).unwrap();
            assert!(over_http.body == bytes, "{name} {output}: WebSocket and HTTP answers differ");
        }
    }
}

#[test]
fn bad_output_options_get_a_clear_error_and_the_session_goes_on() {
    let (server, _root) = serve_generated("output-errors", &["open_gop_bframes.mp4"], &[]);
    let key = "videos/open_gop_bframes.mp4";
    for (options, complaint) in [
        ("&width=0", "width must be 1-16384"),
        ("&height=99999", "height must be 1-16384"),
        ("&format=gif", "format must be jpeg, webp or png"),
        ("&quality=0", "quality must be 1-100"),
        ("&format=png&quality=50", "not png"),
        ("&widht=320", "widht"),
        ("&width=abc", "width"),
    ] {
        let response = http_get(server.port, &format!("/api/v1/frame?video={key}&frame=3{options}")).unwrap();
        assert_eq!(response.status, 400, "{options}: {}", response.text());
        assert!(response.text().contains(complaint), "{options}: {}", response.text());
    }

    let (_, index) = fetch_index(&server, key).unwrap();
    let mut client = Client::connect(&server.ws_url()).unwrap();
    client.set_video(key).unwrap();
    let frame = json!({"offset": index[3].offset, "irap_offset": index[3].irap_offset, "index": 3});
    for (output, complaint) in [
        (json!({"width": 0}), "width must be 1-16384"),
        (json!({"format": "bmp"}), "format must be jpeg, webp or png"),
        (json!({"size": 10}), "unknown output option"),
        (json!("small"), "must be an object"),
    ] {
        client.send_json(&json!({"type": "RequestFrames", "output": output, "frames": [frame]})).unwrap();
        let Answer::Error(error) = client.receive_answer().unwrap() else { panic!("{output}: a frame was served") };
        assert_eq!(error["error"], "invalid_request", "{error}");
        assert!(error["message"].as_str().unwrap().contains(complaint), "{output}: {error}");
    }
    client.send_json(&json!({"type": "RequestFrames", "frames": [frame]})).unwrap();
    assert!(matches!(client.receive_answer().unwrap(), Answer::Frame { header, .. } if header["width"] == 640));
}
