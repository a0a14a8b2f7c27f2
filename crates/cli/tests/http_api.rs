//! The HTTP API over real sockets: health, listing, the index (gzip when
//! accepted), single frames as JPEG (pixel-checked against FFmpeg) and their
//! errors.

mod common;

use common::{fetch_index, scratch_dir, small_rgb, start_local, stock, MIN_PSNR};
use testkit::image::{check_frame, factor_for};
use testkit::processes::{http_get, http_get_with};

#[test]
fn http_api_serves_health_listing_index_and_frames() {
    let fixture = testkit::fixtures::generated_named("open_gop_bframes.mp4").unwrap();
    let root = scratch_dir("http");
    stock(&root, std::slice::from_ref(&fixture));
    std::fs::write(root.join("videos/readme.txt"), "not listed").unwrap();
    let server = start_local(&root, &[]);
    let port = server.port;

    // Every metric exists before any traffic, with its help text, so rate() works on a fresh pod.
    let fresh = http_get(port, "/metrics").unwrap().text();
    for name in
        ["bucket_streamer_frames_served_total", "bucket_streamer_frame_errors_total", "bucket_streamer_sessions"]
    {
        assert!(fresh.contains(&format!("# HELP {name} ")), "no help for {name}:\n{fresh}");
        assert!(fresh.lines().any(|line| line == format!("{name} 0")), "{name} is not 0 on a fresh server:\n{fresh}");
    }

    for path in ["/health", "/healthz"] {
        let response = http_get(port, path).unwrap();
        assert_eq!((response.status, response.text().as_str()), (200, "ok"), "{path}");
    }

    let listing = http_get(port, "/api/v1/videos?prefix=videos").unwrap().json().unwrap();
    let paths: Vec<&str> = listing["videos"].as_array().unwrap().iter().map(|v| v["path"].as_str().unwrap()).collect();
    assert_eq!(paths, vec!["videos/open_gop_bframes.mp4"]);
    assert!(http_get(port, "/api/v1/videos?prefix=elsewhere").unwrap().json().unwrap()["videos"]
        .as_array()
        .unwrap()
        .is_empty());

    let key = "videos/open_gop_bframes.mp4";
    let (index_json, index) = fetch_index(&server, key).unwrap();
    assert_eq!((index_json["width"].as_u64(), index_json["height"].as_u64()), (Some(640), Some(360)));
    assert_eq!(index_json["codec"], "hevc");
    assert_eq!(index_json["frame_rate"].as_f64(), Some(25.0));
    let packets = testkit::reference::packets(&fixture.path).unwrap();
    assert_eq!(index.len(), packets.len());
    let times: Vec<f64> =
        index_json["frames"].as_array().unwrap().iter().map(|f| f["time"].as_f64().unwrap()).collect();
    assert_eq!(times[0], 0.0);
    assert!(times.windows(2).all(|w| w[1] > w[0]), "frames are listed in presentation order");
    // Each frame's IRAP is the last keyframe at or before it in decode order, as ffprobe lists them.
    let irap_of = testkit::reference::irap_of(&packets);
    for frame in &index {
        assert_eq!(frame.irap_offset, irap_of[&frame.offset], "IRAP of frame {}", frame.number);
        assert_eq!(frame.keyframe, frame.irap_offset == frame.offset, "frame {} keyframe flag", frame.number);
    }

    // Text answers are gzip-compressed for clients that accept it; JPEGs are not.
    let index_path = format!("/api/v1/videos/{key}/index");
    let plain = http_get(port, &index_path).unwrap();
    assert_eq!(plain.header("content-encoding"), None);
    let gzipped = http_get_with(port, &index_path, &[("Accept-Encoding", "gzip")]).unwrap();
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    assert!(gzipped.body.len() * 3 < plain.body.len(), "{} → {} bytes", plain.body.len(), gzipped.body.len());
    let mut unpacked = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gzipped.body.as_slice()), &mut unpacked).unwrap();
    assert_eq!(unpacked, plain.body);
    let jpeg = http_get_with(port, &format!("/api/v1/frame?video={key}&frame=1"), &[("Accept-Encoding", "gzip")]);
    assert_eq!(jpeg.unwrap().header("content-encoding"), None);

    let factor = factor_for(640);
    let reference = testkit::reference::frames(&fixture.path, factor).unwrap();
    for number in [0usize, 22, 37, 74] {
        for target in [
            format!("/api/v1/frame?video={key}&frame={number}"),
            format!(
                "/api/v1/frame?video={key}&offset={}&irap_offset={}",
                index[number].offset, index[number].irap_offset
            ),
        ] {
            let response = http_get(port, &target).unwrap();
            assert_eq!(response.status, 200, "{target}: {}", response.text());
            assert_eq!(response.header("content-type"), Some("image/jpeg"));
            let small = small_rgb(&response.body, factor).unwrap();
            check_frame(&small, &reference, number, MIN_PSNR).unwrap();
        }
    }

    // Frames are immutable for an object version: strong ETag, cacheable forever, 304 on a match.
    let target = format!("/api/v1/frame?video={key}&frame=10");
    let first = http_get(port, &target).unwrap();
    let etag = first.header("etag").unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"), "{etag}");
    assert_eq!(first.header("cache-control"), Some("public, max-age=31536000, immutable"));
    let by_offset = http_get(port, &format!("/api/v1/frame?video={key}&offset={}", index[10].offset)).unwrap();
    assert_eq!(by_offset.header("etag"), Some(etag.as_str()), "the same frame has the same tag however it is named");
    let other = http_get(port, &format!("/api/v1/frame?video={key}&frame=11")).unwrap();
    assert_ne!(other.header("etag"), Some(etag.as_str()));
    let revalidated = http_get_with(port, &target, &[("If-None-Match", &etag)]).unwrap();
    assert_eq!(revalidated.status, 304);
    assert!(revalidated.body.is_empty());
    assert_eq!(revalidated.header("etag"), Some(etag.as_str()));
    let stale = http_get_with(port, &target, &[("If-None-Match", "\"0000\"")]).unwrap();
    assert_eq!(stale.status, 200);

    let errors = [
        ("/api/v1/frame?video=videos/missing.mp4&frame=1", 404, "not_found"),
        ("/api/v1/frame?video=../x.mp4&frame=1", 400, "invalid_path"),
        (&format!("/api/v1/frame?video={key}&frame=75") as &str, 404, "not_a_frame"),
        (&format!("/api/v1/frame?video={key}&offset=1"), 404, "not_a_frame"),
        (&format!("/api/v1/frame?video={key}"), 400, "invalid_request"),
        (&format!("/api/v1/frame?video={key}&offset={}&irap_offset=5", index[3].offset), 400, "invalid_irap"),
        ("/api/v1/videos/videos/missing.mp4/index", 404, "not_found"),
        ("/api/v1/videos/videos/readme.txt/index", 422, "not_a_video"),
    ];
    for (target, status, code) in errors {
        let response = http_get(port, target).unwrap();
        assert_eq!(response.status, status, "{target}: {}", response.text());
        assert_eq!(response.json().unwrap()["error"], code, "{target}");
    }

    let metrics = http_get(port, "/metrics").unwrap().text();
    for name in [
        "bucket_streamer_storage_read_bytes_total",
        "bucket_streamer_frames_decoded_total",
        "bucket_streamer_cache_hits_total",
        "bucket_streamer_channels",
        "bucket_streamer_fetch_seconds_bucket",
        "bucket_streamer_decode_seconds_bucket",
        "bucket_streamer_encode_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
}
