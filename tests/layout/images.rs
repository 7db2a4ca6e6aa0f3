//! Images: base64, data URIs, image paths relative to the layout, embedding, and errors that
//! name the entity.

use glichen::layout::{
    base64_decode, base64_encode, decode_data_uri, encode_data_uri, is_data_uri, Entity, Inpaint,
    Layout,
};

use crate::{text_box, TempDir};

fn png_bytes(img: &image::RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .expect("encode png");
    bytes
}

fn test_image() -> image::RgbImage {
    image::RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 50, y as u8 * 80, 200]))
}

#[test]
fn base64_matches_the_rfc_vectors() {
    let vectors = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in vectors {
        assert_eq!(base64_encode(plain.as_bytes()), encoded);
        assert_eq!(base64_decode(encoded).expect("decode"), plain.as_bytes());
    }
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(base64_decode(&base64_encode(&all)).expect("decode"), all);
    // Lenient: no padding, line breaks, URL-safe alphabet.
    assert_eq!(base64_decode("Zm9vYg").expect("no pad"), b"foob");
    assert_eq!(base64_decode("Zm9v\nYmFy\n").expect("newlines"), b"foobar");
    assert_eq!(
        base64_decode("-_8=").expect("url-safe"),
        base64_decode("+/8=").expect("std")
    );
    assert!(base64_decode("Zm9v!").is_err());
    assert!(base64_decode("Zm9vY").is_err());
    assert!(base64_decode("Zg==Zg==").is_err());
}

#[test]
fn data_uri_round_trip_with_a_generated_png() {
    let dir = TempDir::new("data-uri");
    let img = test_image();
    let bytes = png_bytes(&img);
    std::fs::write(dir.path().join("ref.png"), &bytes).expect("write png");
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(img.clone())
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .expect("encode jpeg");
    std::fs::write(dir.path().join("photo.jpg"), &jpeg).expect("write jpeg");

    let mut layout = Layout {
        entities: vec![
            text_box("a dog", [0.0, 0.0, 0.5, 0.5]),
            Entity::ImageBox {
                image: "ref.png".into(),
                bbox: [0.5, 0.5, 1.0, 1.0],
                phrase: None,
            },
            Entity::StyleImage {
                image: "ref.png".into(),
            },
        ],
        inpaint: Some(Inpaint {
            image: "photo.jpg".into(),
        }),
        ..Layout::default()
    };
    let base = Some(dir.path());
    let from_file = layout.resolve_image("ref.png", base).expect("resolve path");
    assert_eq!(from_file.to_rgb8(), img);
    assert_eq!(layout.entity_image(2, base).expect("style").to_rgb8(), img);

    // A layout saved next to its images finds them via base_dir.
    let layout_path = dir.path().join("scene.json");
    layout.save(&layout_path).expect("save");
    let loaded = Layout::load(&layout_path).expect("load");
    let base_dir = Layout::base_dir(&layout_path);
    assert_eq!(
        loaded.entity_image(1, base_dir).expect("image").to_rgb8(),
        img
    );

    assert_eq!(layout.embed_images(base).expect("embed"), 2);
    let uri = layout.entities[1].image().expect("image").to_string();
    assert!(uri.starts_with("data:image/png;base64,"), "{uri}");
    assert!(is_data_uri(&uri));
    assert_eq!(layout.entities[2].image(), Some(uri.as_str()));
    // Embedded byte for byte, no re-encoding.
    let (media_type, decoded) = decode_data_uri(&uri).expect("decode");
    assert_eq!(media_type, "image/png");
    assert_eq!(decoded, bytes);
    let inpaint_uri = &layout.inpaint.as_ref().expect("inpaint").image;
    assert!(inpaint_uri.starts_with("data:image/jpeg;base64,"));
    assert_eq!(decode_data_uri(inpaint_uri).expect("jpeg").1, jpeg);

    // Resolvable without any folder, and through a JSON round trip.
    assert_eq!(
        layout.resolve_image(&uri, None).expect("uri").to_rgb8(),
        img
    );
    let back = Layout::from_json_str(&layout.to_json_pretty().expect("json")).expect("parse");
    assert_eq!(back, layout);
    assert_eq!(back.entity_image(1, None).expect("image").to_rgb8(), img);
    let photo = back.inpaint_image(None).expect("inpaint").expect("some");
    assert_eq!((photo.width(), photo.height()), (5, 3));
    assert_eq!(layout.embed_images(None).expect("idempotent"), 0);

    // encode_data_uri builds the same thing by hand.
    assert_eq!(encode_data_uri(&bytes, "image/png"), uri);
    back.validate().expect("valid");
}

#[test]
fn image_errors_name_the_entity() {
    let dir = TempDir::new("image-errors");
    std::fs::write(dir.path().join("notes.png"), b"this is not a png").expect("write");
    let mut layout = Layout {
        entities: vec![
            text_box("a", [0.0, 0.0, 1.0, 1.0]),
            Entity::ImageBox {
                image: "missing.png".into(),
                bbox: [0.0, 0.0, 1.0, 1.0],
                phrase: None,
            },
            Entity::StyleImage {
                image: "notes.png".into(),
            },
            Entity::StyleImage {
                image: "data:image/png;base64,@@@".into(),
            },
        ],
        ..Layout::default()
    };
    let base = Some(dir.path());
    let err = layout
        .resolve_image("missing.png", base)
        .expect_err("missing");
    let text = err.to_string();
    assert!(
        text.starts_with("entities[1].image: cannot read "),
        "{text}"
    );
    assert!(text.contains("missing.png"), "{text}");

    let err = layout.entity_image(2, base).expect_err("not a png");
    assert!(err.to_string().starts_with("entities[2].image: "), "{err}");
    assert!(err.to_string().contains("notes.png"), "{err}");

    let err = layout.entity_image(3, base).expect_err("bad base64");
    assert!(err.to_string().starts_with("entities[3].image: "), "{err}");
    let err = layout.entity_image(0, base).expect_err("text box");
    assert!(err.to_string().contains("text_box has no image"), "{err}");

    // Embedding is all-or-nothing.
    let before = layout.clone();
    let err = layout.embed_images(base).expect_err("missing file");
    assert!(err.to_string().starts_with("entities[1].image"), "{err}");
    assert_eq!(layout, before);
}
