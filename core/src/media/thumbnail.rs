//! Thumbnails: which configured size answers a request, and making one with the `image` crate.
//! Only the formats the crate is built with (PNG, JPEG, GIF, WebP) are decoded, and only up to a
//! pixel limit, so a small file that claims to be enormous cannot exhaust memory.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, imageops::FilterType};

use crate::{
    Error, Result,
    config::{ThumbnailMethod, ThumbnailSize},
};

/// A rendered thumbnail.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// The configured size that answers a request: the smallest of the requested method at least as
/// large as asked, or the largest when none is. Requests never make arbitrary sizes, so each
/// image has a handful of thumbnails at most.
pub fn select_size(
    sizes: &[ThumbnailSize],
    width: u32,
    height: u32,
    method: ThumbnailMethod,
) -> Option<ThumbnailSize> {
    let same: Vec<ThumbnailSize> = sizes.iter().copied().filter(|s| s.method == method).collect();
    let candidates = if same.is_empty() { sizes.to_vec() } else { same };
    let area = |s: &ThumbnailSize| u64::from(s.width) * u64::from(s.height);
    candidates
        .iter()
        .filter(|s| s.width >= width && s.height >= height)
        .min_by_key(|s| area(s))
        .or_else(|| candidates.iter().max_by_key(|s| area(s)))
        .copied()
}

/// The dimensions of the thumbnail of a `src_w`×`src_h` image. Never larger than the source:
/// a crop too big for it keeps its aspect ratio and shrinks; a scale keeps the source's ratio.
pub fn target_dimensions(src_w: u32, src_h: u32, size: ThumbnailSize) -> (u32, u32) {
    let (sw, sh, tw, th) =
        (f64::from(src_w), f64::from(src_h), f64::from(size.width), f64::from(size.height));
    let dims = match size.method {
        ThumbnailMethod::Crop => {
            let factor = (sw / tw).min(sh / th).min(1.0);
            (tw * factor, th * factor)
        }
        ThumbnailMethod::Scale => {
            let factor = (tw / sw).min(th / sh).min(1.0);
            (sw * factor, sh * factor)
        }
    };
    // Bounded by the u32 inputs, so the casts cannot overflow.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let round = |v: f64| (v.round() as u32).max(1);
    (round(dims.0), round(dims.1))
}

/// Whether media of this type can be thumbnailed at all.
pub fn is_thumbnailable(content_type: &str) -> bool {
    matches!(
        essence(content_type).as_str(),
        "image/png" | "image/jpeg" | "image/jpg" | "image/gif" | "image/webp"
    )
}

/// Whether a type can carry an animation that a thumbnail would freeze.
pub fn is_animatable(content_type: &str) -> bool {
    matches!(essence(content_type).as_str(), "image/gif" | "image/webp" | "image/apng" | "image/png")
}

/// The MIME type without parameters, lower-cased.
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn decode_error(e: impl std::fmt::Display) -> Error {
    Error::bad_request(format!("Cannot make a thumbnail of this media: {e}"))
}

/// Reads the dimensions without decoding the pixels.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32)> {
    reader(bytes)?.into_dimensions().map_err(decode_error)
}

fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>> {
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(decode_error)?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP) => Ok(reader),
        _ => Err(Error::bad_request(
            "Cannot make a thumbnail of this media: not an image format this server reads",
        )),
    }
}

/// Renders the thumbnail of `bytes` for `size`: JPEG sources give JPEG (smaller for photos),
/// everything else PNG (which keeps transparency). Runs on the caller's thread: it is CPU work,
/// so async callers put it on a blocking thread.
pub fn render(bytes: &[u8], size: ThumbnailSize, max_pixels: u64) -> Result<Thumbnail> {
    let (src_w, src_h) = dimensions(bytes)?;
    if u64::from(src_w) * u64::from(src_h) > max_pixels {
        return Err(Error::bad_request("Cannot make a thumbnail of this media: the image is too large"));
    }
    let reader = reader(bytes)?;
    let is_jpeg = reader.format() == Some(ImageFormat::Jpeg);
    let mut reader = reader;
    let mut limits = Limits::default();
    limits.max_image_width = Some(src_w);
    limits.max_image_height = Some(src_h);
    // Four bytes a pixel with room for a conversion copy.
    limits.max_alloc = Some(max_pixels.saturating_mul(16));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    // Phone cameras store pictures sideways and say so in EXIF; thumbnails show them upright.
    let orientation = decoder.orientation().map_err(decode_error)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    image.apply_orientation(orientation);

    let (width, height) = target_dimensions(image.width(), image.height(), size);
    let thumb = match size.method {
        ThumbnailMethod::Crop => image.resize_to_fill(width, height, FilterType::Triangle),
        ThumbnailMethod::Scale => image.resize_exact(width, height, FilterType::Triangle),
    };
    let mut out = Cursor::new(Vec::new());
    let content_type = if is_jpeg {
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
        DynamicImage::ImageRgb8(thumb.to_rgb8()).write_with_encoder(encoder).map_err(Error::internal)?;
        "image/jpeg"
    } else {
        thumb.write_to(&mut out, ImageFormat::Png).map_err(Error::internal)?;
        "image/png"
    };
    Ok(Thumbnail { bytes: out.into_inner(), content_type, width: thumb.width(), height: thumb.height() })
}

#[cfg(test)]
mod tests {
    use image::{ImageBuffer, Rgb};

    use super::*;

    fn size(width: u32, height: u32, method: ThumbnailMethod) -> ThumbnailSize {
        ThumbnailSize { width, height, method }
    }

    fn sample(format: ImageFormat, w: u32, h: u32) -> Vec<u8> {
        let img =
            ImageBuffer::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]));
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img).write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn selects_the_smallest_size_that_is_large_enough() {
        let sizes = crate::config::MediaConfig::default().thumbnail_sizes;
        assert_eq!(
            select_size(&sizes, 50, 50, ThumbnailMethod::Crop),
            Some(size(96, 96, ThumbnailMethod::Crop))
        );
        assert_eq!(
            select_size(&sizes, 10, 10, ThumbnailMethod::Crop),
            Some(size(32, 32, ThumbnailMethod::Crop))
        );
        assert_eq!(
            select_size(&sizes, 500, 500, ThumbnailMethod::Crop),
            Some(size(96, 96, ThumbnailMethod::Crop))
        );
        assert_eq!(
            select_size(&sizes, 320, 240, ThumbnailMethod::Scale),
            Some(size(320, 240, ThumbnailMethod::Scale))
        );
        assert_eq!(
            select_size(&sizes, 4000, 10, ThumbnailMethod::Scale),
            Some(size(800, 600, ThumbnailMethod::Scale))
        );
        assert_eq!(select_size(&[], 1, 1, ThumbnailMethod::Scale), None);
    }

    #[test]
    fn target_dimensions_never_upscale() {
        let crop = |w, h| size(w, h, ThumbnailMethod::Crop);
        let scale = |w, h| size(w, h, ThumbnailMethod::Scale);
        assert_eq!(target_dimensions(800, 600, crop(96, 96)), (96, 96));
        assert_eq!(target_dimensions(50, 40, crop(96, 96)), (40, 40));
        assert_eq!(target_dimensions(800, 600, scale(320, 240)), (320, 240));
        assert_eq!(target_dimensions(1000, 500, scale(320, 240)), (320, 160));
        assert_eq!(target_dimensions(100, 50, scale(320, 240)), (100, 50));
        assert_eq!(target_dimensions(10_000, 1, scale(320, 240)), (320, 1));
    }

    #[test]
    fn renders_png_and_jpeg() {
        let png = sample(ImageFormat::Png, 800, 600);
        let thumb = render(&png, size(96, 96, ThumbnailMethod::Crop), 32_000_000).unwrap();
        assert_eq!((thumb.width, thumb.height, thumb.content_type), (96, 96, "image/png"));
        assert_eq!(dimensions(&thumb.bytes).unwrap(), (96, 96));
        assert!(thumb.bytes.len() < png.len());

        let jpeg = sample(ImageFormat::Jpeg, 800, 600);
        let thumb = render(&jpeg, size(320, 240, ThumbnailMethod::Scale), 32_000_000).unwrap();
        assert_eq!((thumb.width, thumb.height, thumb.content_type), (320, 240, "image/jpeg"));
        assert!(thumb.bytes.len() < jpeg.len());
    }

    #[test]
    fn refuses_what_it_cannot_or_should_not_decode() {
        assert_eq!(
            render(b"not an image", size(32, 32, ThumbnailMethod::Crop), 1000).unwrap_err().code(),
            crate::ErrorCode::BadRequest
        );
        let png = sample(ImageFormat::Png, 100, 100);
        assert_eq!(
            render(&png, size(32, 32, ThumbnailMethod::Crop), 1000).unwrap_err().code(),
            crate::ErrorCode::BadRequest
        );
        assert!(is_thumbnailable("image/JPEG; charset=x"));
        assert!(!is_thumbnailable("image/svg+xml"));
    }
}
