//! The headless front end as a user runs it: what `glichen generate` reads (any document the
//! studio opens; latents and pictures bounded), what it writes (through devices, pipes and
//! symlinks, never renamed over them; the format `--out` names) and what it says on stderr.

mod common;

use common::{case_dir, case_model, TempDir};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn glichen<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_glichen"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running glichen")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `glichen generate` on case `a_one_box` with its init latents, plus `extra` arguments.
fn generate(layout: &Path, extra: &[&OsStr]) -> Output {
    let case = case_dir("a_one_box");
    let model = case_model(&case);
    let init = case.join("init_latents.safetensors");
    let mut args: Vec<&OsStr> = vec![
        "generate".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--layout".as_ref(),
        layout.as_os_str(),
        "--init-latents".as_ref(),
        init.as_os_str(),
        "--steps".as_ref(),
        "2".as_ref(),
    ];
    args.extend_from_slice(extra);
    glichen(args)
}

fn case_layout() -> PathBuf {
    case_dir("a_one_box").join("layout.json")
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[cfg(unix)]
fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false)
}

#[test]
fn out_picks_the_format_by_extension() {
    let tmp = TempDir::new("cli-formats");
    for (name, format) in [
        ("o.jpg", image::ImageFormat::Jpeg),
        ("o.JPEG", image::ImageFormat::Jpeg),
        ("o.webp", image::ImageFormat::WebP),
        ("o.png", image::ImageFormat::Png),
    ] {
        let out_path = tmp.join(name);
        let out = generate(&case_layout(), &["--out".as_ref(), out_path.as_os_str()]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let bytes = std::fs::read(&out_path).unwrap();
        assert_eq!(image::guess_format(&bytes).unwrap(), format, "{name}");
        let carries_layout = glichen::layout::png::layout_json_from_png(&bytes).is_ok();
        assert_eq!(carries_layout, format == image::ImageFormat::Png, "{name}");
        if format != image::ImageFormat::Png {
            assert!(
                stderr(&out).contains("does not carry the layout"),
                "{}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn an_unknown_out_extension_is_refused_before_the_model_loads() {
    let tmp = TempDir::new("cli-gif");
    let out_path = tmp.join("o.gif");
    let out = glichen([
        OsStr::new("generate"),
        "--model".as_ref(),
        "/nonexistent/model".as_ref(),
        "--layout".as_ref(),
        case_layout().as_os_str(),
        "--out".as_ref(),
        out_path.as_os_str(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("not .gif") && err.contains("o.gif"), "{err}");
    assert!(
        !err.contains("nonexistent"),
        "checked before the model: {err}"
    );
}

#[test]
fn generate_reads_what_the_studio_opens() {
    let tmp = TempDir::new("cli-import");
    // The same box as diffusers call arguments.
    let mut layout = glichen::layout::Layout::load(case_layout()).unwrap();
    // diffusers takes the scheduler from the pipeline, not the call.
    layout.sampling.scheduler = None;
    let args = layout.to_diffusers_args().unwrap();
    let args_path = tmp.join("args.json");
    std::fs::write(&args_path, serde_json::to_string(&args).unwrap()).unwrap();
    let out_path = tmp.join("o.png");
    let out = generate(&args_path, &["--out".as_ref(), out_path.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // And a PNG Glichen wrote serves as the layout of the next run.
    let again = tmp.join("again.png");
    let out = generate(&out_path, &["--out".as_ref(), again.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        image::open(&out_path).unwrap().to_rgb8(),
        image::open(&again).unwrap().to_rgb8()
    );
}

#[cfg(unix)]
#[test]
fn out_and_save_latents_write_through_symlinks_and_refuse_pipes_without_readers() {
    let tmp = TempDir::new("cli-special");
    let target = tmp.join("target.png");
    std::fs::write(&target, b"old").unwrap();
    let link = tmp.join("link.png");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = generate(&case_layout(), &["--out".as_ref(), link.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        image::guess_format(&std::fs::read(&target).unwrap()).unwrap(),
        image::ImageFormat::Png
    );

    let fifo = tmp.join("latents.safetensors");
    mkfifo(&fifo);
    let out_path = tmp.join("o.png");
    let save_latents_into_the_fifo = || {
        generate(
            &case_layout(),
            &[
                "--out".as_ref(),
                out_path.as_os_str(),
                "--save-latents".as_ref(),
                fifo.as_os_str(),
            ],
        )
    };
    let out = save_latents_into_the_fifo();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("latents.safetensors") && err.contains("no reader"),
        "{err}"
    );
    assert!(is_fifo(&fifo), "the FIFO was replaced");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A pipe with a reader gets the bytes.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let out = save_latents_into_the_fifo();
    // The reader may open late: a writer that finds none fails cleanly, never hangs.
    let bytes = if out.status.success() {
        reader.join().unwrap()
    } else {
        assert!(stderr(&out).contains("no reader"), "{}", stderr(&out));
        std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        reader.join().unwrap();
        return;
    };
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(tensors.names().contains(&"latents"));
    assert!(is_fifo(&fifo));
}

#[cfg(unix)]
#[test]
fn init_latents_and_noise_from_devices_fifos_or_folders_are_refused_at_once() {
    let tmp = TempDir::new("cli-latents");
    let fifo = tmp.join("noise.safetensors");
    mkfifo(&fifo);
    let out_path = tmp.join("o.png");
    for bad in [Path::new("/dev/zero"), fifo.as_path(), tmp.path()] {
        let case = case_dir("a_one_box");
        let model = case_model(&case);
        let out = glichen([
            OsStr::new("generate"),
            "--model".as_ref(),
            model.as_os_str(),
            "--layout".as_ref(),
            case_layout().as_os_str(),
            "--init-latents".as_ref(),
            bad.as_os_str(),
            "--out".as_ref(),
            out_path.as_os_str(),
        ]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains(&bad.display().to_string()), "{err}");
        assert!(
            err.contains("not a regular file") || err.contains("is a folder"),
            "{err}"
        );
    }
    assert!(!out_path.exists());
}

#[test]
fn a_typo_in_a_layout_is_warned_once_without_terminal_codes() {
    let tmp = TempDir::new("cli-typo");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case_layout()).unwrap()).unwrap();
    json["sampling"]["stpes"] = 3.into();
    let layout = tmp.join("layout.json");
    std::fs::write(&layout, json.to_string()).unwrap();
    let out_path = tmp.join("o.png");
    let out = generate(&layout, &["--out".as_ref(), out_path.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("stpes").count(), 1, "{err}");
    assert!(err.contains("steps"), "did-you-mean: {err}");
    assert!(!err.contains('\u{1b}'), "ANSI codes on a pipe: {err:?}");
}

/// A PNG whose header declares `w` × `h` pixels (and holds no pixel data: an empty IDAT).
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[]);
    chunk(b"IEND", &[]);
    png
}

#[test]
fn a_picture_declaring_sixty_thousand_pixels_a_side_is_refused_with_its_size() {
    let err = glichen::layout::decode_picture(&png_header_only(60_000, 60_000)).unwrap_err();
    assert!(err.contains("60000 × 60000"), "{err}");
    // In a layout, the message names the entity.
    let tmp = TempDir::new("cli-huge-picture");
    std::fs::write(tmp.join("huge.png"), png_header_only(60_000, 60_000)).unwrap();
    let layout: glichen::layout::Layout = serde_json::from_str(
        r#"{"version": 1, "width": 64, "height": 64, "entities": [
            {"type": "image_box", "image": "huge.png", "box": [0.1, 0.1, 0.5, 0.5]}]}"#,
    )
    .unwrap();
    let err = layout
        .entity_image(0, Some(tmp.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("entities[0]") && err.contains("60000 × 60000"),
        "{err}"
    );
    // Within the side limit but past the memory a decoded picture may take: refused by its size.
    let err = glichen::layout::decode_picture(&png_header_only(16_000, 16_000)).unwrap_err();
    assert!(
        err.contains("16000 × 16000") && err.contains("732 MiB decoded"),
        "{err}"
    );
    // Device files as pictures are refused, not read until memory runs out.
    #[cfg(unix)]
    {
        let err = glichen::layout::read_picture("/dev/zero", None).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }
}

#[test]
fn errors_name_the_file_once() {
    let missing = Path::new("/nonexistent-folder/layout.json");
    let out = glichen([
        OsStr::new("generate"),
        "--model".as_ref(),
        "/nonexistent/model".as_ref(),
        "--layout".as_ref(),
        missing.as_os_str(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(
        err.matches("/nonexistent-folder/layout.json").count(),
        1,
        "{err}"
    );
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

#[test]
fn layout_from_png_prints_only_a_layout() {
    let tmp = TempDir::new("cli-chunk");
    let img = image::RgbImage::from_pixel(2, 2, image::Rgb([0, 0, 0]));
    let png = tmp.join("not-a-layout.png");
    let bytes = glichen::layout::png::encode_png_with_layout(&img, "{\"hello\": 1}").unwrap();
    std::fs::write(&png, bytes).unwrap();
    let out = glichen([OsStr::new("layout-from-png"), png.as_os_str()]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("not-a-layout.png") && err.contains("embedded layout"),
        "{err}"
    );
}
