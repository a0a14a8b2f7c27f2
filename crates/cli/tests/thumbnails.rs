//! Thumbnail strips over HTTP: keyframes spread evenly over the video, each
//! tile of the sprite the right frame (against FFmpeg's decode), the map
//! saying where; cached and tagged; bad parameters refused.

mod common;

use common::{check_scaled, fetch_index, serve_generated};
use testkit::image::SmallImage;
use testkit::processes::{http_get, http_get_with};

/// A tile (a quarter of the width, JPEG q75, the test pattern's sharp
/// edges) against FFmpeg's frame box-averaged to the tile's size; measured
/// 23.8 dB. Being closer to its own frame than to the neighbours is what
/// shows it is the right one.
const TILE_PSNR: f64 = 21.0;

fn crop(image: &SmallImage, x: usize, y: usize, w: usize, h: usize) -> SmallImage {
    let mut pixels = Vec::with_capacity(w * h * 3);
    for row in y..y + h {
        pixels.extend_from_slice(&image.pixels[(row * image.width + x) * 3..(row * image.width + x + w) * 3]);
    }
    SmallImage { width: w, height: h, pixels }
}

#[test]
fn a_strip_shows_evenly_spread_keyframes_where_its_map_says() {
    let name = "open_gop_bframes.mp4";
    let (server, _root) = serve_generated("thumbnails", &[name], &[]);
    let key = format!("videos/{name}");
    let fixture = testkit::fixtures::generated_named(name).unwrap();
    let reference = testkit::reference::frames(&fixture.path, 1).unwrap();
    let (_, index) = fetch_index(&server, &key).unwrap();
    let keyframes: Vec<u64> = index.iter().filter(|f| f.keyframe).map(|f| f.number as u64).collect();
    assert_eq!(keyframes, [0, 24, 48, 72], "the fixture's GOPs");

    // More tiles asked than keyframes: every keyframe, in order.
    let map = http_get(server.port, &format!("/api/v1/thumbnails?video={key}&width=160")).unwrap();
    assert_eq!(map.status, 200, "{}", map.text());
    let map = map.json().unwrap();
    let tiles = map["tiles"].as_array().unwrap();
    let frames: Vec<u64> = tiles.iter().map(|t| t["frame"].as_u64().unwrap()).collect();
    assert_eq!(frames, keyframes);
    assert_eq!((map["width"].as_u64(), map["height"].as_u64()), (Some(640), Some(90)), "{map}");
    let sprite = http_get(server.port, map["sprite"].as_str().unwrap()).unwrap();
    assert_eq!(sprite.header("content-type"), Some("image/jpeg"));
    let rgb = media::jpeg::decode_rgb(&sprite.body).unwrap();
    let sprite_image = SmallImage { width: rgb.width, height: rgb.height, pixels: rgb.pixels };
    assert_eq!((sprite_image.width, sprite_image.height), (640, 90));
    for tile in tiles {
        let at = |field: &str| tile[field].as_u64().unwrap() as usize;
        assert_eq!((at("w"), at("h")), (160, 90));
        let frame = at("frame");
        assert!((tile["time"].as_f64().unwrap() - frame as f64 / 25.0).abs() < 1e-6, "{tile}");
        let image = crop(&sprite_image, at("x"), at("y"), at("w"), at("h"));
        check_scaled(&image, &reference, frame, TILE_PSNR).unwrap_or_else(|e| panic!("tile {tile}: {e}"));
    }

    // Fewer tiles: the keyframes nearest the middles of equal stretches of time.
    let two = http_get(server.port, &format!("/api/v1/thumbnails?video={key}&width=160&count=2")).unwrap();
    let two = two.json().unwrap();
    let frames: Vec<u64> = two["tiles"].as_array().unwrap().iter().map(|t| t["frame"].as_u64().unwrap()).collect();
    assert_eq!(frames, [24, 48]);

    // Cached and tagged: the same tag again, 304 when the client has it.
    let path = format!("/api/v1/thumbnails/sprite?video={key}&width=160");
    let again = http_get(server.port, &path).unwrap();
    assert_eq!(again.body, sprite.body);
    let tag = again.header("etag").unwrap().to_string();
    assert_eq!(sprite.header("etag"), Some(tag.as_str()));
    let cached = http_get_with(server.port, &path, &[("If-None-Match", tag.as_str())]).unwrap();
    assert_eq!(cached.status, 304);
    let other_width = http_get(server.port, &format!("/api/v1/thumbnails/sprite?video={key}&width=96")).unwrap();
    assert_ne!(other_width.header("etag"), Some(tag.as_str()));

    for (query, complaint) in [
        ("&width=0", "width must be 16-480"),
        ("&width=5000", "width must be 16-480"),
        ("&count=0", "count must be 1-400"),
        ("&count=100000", "count must be 1-400"),
        ("&size=3", "size"),
    ] {
        let response = http_get(server.port, &format!("/api/v1/thumbnails?video={key}{query}")).unwrap();
        assert_eq!(response.status, 400, "{query}: {}", response.text());
        assert!(response.text().contains(complaint), "{query}: {}", response.text());
    }
    let missing = http_get(server.port, "/api/v1/thumbnails?video=videos/none.mp4").unwrap();
    assert_eq!(missing.status, 404);
}
