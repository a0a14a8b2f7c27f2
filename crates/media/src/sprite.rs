//! A sprite: pictures scaled to equal tiles and laid out in a grid, encoded
//! as one JPEG (a timeline's thumbnail strip). Tiles are pasted as JFIF
//! planes, so each picture is scaled and converted once and the sprite is
//! encoded once, with no RGB round trip.

use crate::colour::{to_jfif, JfifPlanes};
use anyhow::{ensure, Result};

pub struct Sprite {
    columns: u32,
    tile_width: u32,
    tile_height: u32,
    planes: JfifPlanes,
}

impl Sprite {
    /// Bytes the planes of a sprite made by `new` with these sizes take
    /// (4:2:0, a byte a sample).
    pub fn memory_needed(count: u32, columns: u32, tile_width: u32, tile_height: u32) -> u64 {
        let (width, height) = layout(count, columns, tile_width, tile_height);
        width.saturating_mul(height).saturating_mul(3) / 2
    }

    /// An empty (black) sprite of `count` tiles of `tile_width` x
    /// `tile_height`, `columns` to a row. Tile sides must be even, so each
    /// tile owns whole chroma samples.
    pub fn new(count: u32, columns: u32, tile_width: u32, tile_height: u32) -> Result<Self> {
        ensure!(count > 0 && columns > 0, "a sprite needs tiles");
        ensure!(tile_width.is_multiple_of(2) && tile_height.is_multiple_of(2), "tile sides must be even");
        let (width, height) = layout(count, columns, tile_width, tile_height);
        ensure!(width.saturating_mul(height) <= 64 << 20, "a {width}x{height} sprite is too large");
        let (width, height) = (width as usize, height as usize);
        let chroma = width.div_ceil(2) * height.div_ceil(2);
        let planes =
            JfifPlanes { width, height, y: vec![0; width * height], u: vec![128; chroma], v: vec![128; chroma] };
        Ok(Self { columns, tile_width, tile_height, planes })
    }

    /// Where tile `n` lies: its top left corner.
    pub fn place(&self, n: u32) -> (u32, u32) {
        ((n % self.columns) * self.tile_width, (n / self.columns) * self.tile_height)
    }

    /// Scales `picture` into tile `n` (it must fit the tile's size exactly
    /// after scaling: the caller picks tiles of the video's aspect).
    pub fn paste(&mut self, n: u32, picture: &crate::Picture) -> Result<()> {
        let tile = to_jfif(&crate::scale::resize(picture, self.tile_width, self.tile_height)?)?;
        let (x, y) = self.place(n);
        ensure!(
            (x + self.tile_width) as usize <= self.planes.width
                && (y + self.tile_height) as usize <= self.planes.height,
            "tile {n} lies outside the sprite"
        );
        let (x, y, w, h) = (x as usize, y as usize, self.tile_width as usize, self.tile_height as usize);
        copy_block(&tile.y, w, &mut self.planes.y, self.planes.width, (x, y), (w, h));
        let chroma_width = self.planes.chroma_width();
        for (from, to) in [(&tile.u, &mut self.planes.u), (&tile.v, &mut self.planes.v)] {
            copy_block(from, w / 2, to, chroma_width, (x / 2, y / 2), (w / 2, h / 2));
        }
        Ok(())
    }

    /// The sprite as a JPEG, and its size.
    pub fn encode(&self, quality: u8) -> Result<(Vec<u8>, u32, u32)> {
        Ok((crate::jpeg::encode(&self.planes, quality)?, self.planes.width as u32, self.planes.height as u32))
    }
}

/// Width and height of a sprite of `count` tiles, `columns` to a row.
fn layout(count: u32, columns: u32, tile_width: u32, tile_height: u32) -> (u64, u64) {
    let width = u64::from(columns.min(count)) * u64::from(tile_width);
    let height = u64::from(count.div_ceil(columns.max(1))) * u64::from(tile_height);
    (width, height)
}

/// Copies a `size` block from a tightly packed plane into `to` at `at`.
fn copy_block(
    from: &[u8],
    from_stride: usize,
    to: &mut [u8],
    to_stride: usize,
    at: (usize, usize),
    size: (usize, usize),
) {
    for row in 0..size.1 {
        let source = &from[row * from_stride..row * from_stride + size.0];
        let start = (at.1 + row) * to_stride + at.0;
        to[start..start + size.0].copy_from_slice(source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_needed_is_what_the_planes_take() {
        for (count, columns, width, height) in
            [(100, 10, 160, 90), (7, 10, 480, 270), (400, 10, 480, 270), (1, 1, 2, 2)]
        {
            let sprite = Sprite::new(count, columns, width, height).unwrap();
            let planes = &sprite.planes;
            let held = planes.y.len() + planes.u.len() + planes.v.len();
            assert_eq!(Sprite::memory_needed(count, columns, width, height), held as u64);
        }
        assert_eq!(Sprite::memory_needed(u32::MAX, 1, u32::MAX, u32::MAX), u64::MAX / 2);
    }
}
