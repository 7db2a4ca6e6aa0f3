//! ControlNet's HED network (`glichen::model::hed`) and its detector (`glichen::maps::hed`) against
//! `controlnet_aux` 0.0.10's `ControlNetHED_Apache2` and `HEDdetector.__call__` with OpenCV 5.1, on
//! the tiny random network of `tests/fixtures/make_hed_fixtures.py` (`tests/fixtures/hed/`): the five
//! projections on a 72×40 and a 50×33 picture (sides that are not multiples of 16: the max-pools
//! floor) and a 64×64 one; `cv2.resize(.., INTER_LINEAR)` bit for bit (IPP's code and OpenCV's own);
//! the float and 8-bit maps; the `.pth` and `.safetensors` files alike; the real file's shapes; the
//! weights resolved from paths and the Hugging Face cache offline; errors naming the key, the file
//! and the size. Print the measured numbers with
//! `cargo test --release --features testing --test hed -- --nocapture`.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{check, fixtures, get, load_st, TempDir, MODULE_TOL};
use glichen::maps::hed::{
    opencv_resize_linear, pixel_values, resolve_hed_weights, HedDetector, HedError, OpenCvLinear,
    HUB_REPO, WEIGHTS_FILE,
};
use glichen::maps::MapError;
use glichen::model::hed::{Hed, HedBlockConfig, HedConfig};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const PICTURES: [&str; 3] = ["wide", "square", "odd"];

fn dir() -> PathBuf {
    fixtures().join("hed")
}

fn refs() -> HashMap<String, Tensor> {
    load_st(&dir().join("refs.safetensors"))
}

fn picture(name: &str) -> image::RgbImage {
    let path = dir().join(format!("photo_{name}.png"));
    image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

fn detector(file: &str) -> HedDetector {
    HedDetector::load(&dir().join(file), &Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
}

fn block(convs: usize, channels: usize) -> HedBlockConfig {
    HedBlockConfig { convs, channels }
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn network_matches_controlnet_aux() {
    let det = detector("tiny-hed.pth");
    assert_eq!(
        det.config(),
        &HedConfig {
            in_channels: 3,
            blocks: vec![
                block(2, 4),
                block(2, 8),
                block(3, 8),
                block(3, 16),
                block(3, 16)
            ],
        }
    );
    let refs = refs();
    for name in PICTURES {
        let projections = det
            .network()
            .forward(&pixel_values(&picture(name)).unwrap())
            .unwrap();
        assert_eq!(projections.len(), 5);
        for (k, ours) in projections.iter().enumerate() {
            let reference = get(&refs, &format!("{name}_projection_{}", k + 1));
            check(
                &format!("{name} projection {} {:?}", k + 1, reference.dims()),
                ours,
                reference,
                MODULE_TOL,
            );
        }
    }
}

#[test]
fn pth_and_safetensors_load_the_same() {
    let (pth, st) = (detector("tiny-hed.pth"), detector("tiny-hed.safetensors"));
    assert_eq!(pth.config(), st.config());
    let x = pixel_values(&picture("odd")).unwrap();
    let (a, b) = (
        pth.network().forward(&x).unwrap(),
        st.network().forward(&x).unwrap(),
    );
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(flat(a), flat(b));
    }
    assert_eq!(
        pth.detect(&picture("wide")).unwrap(),
        st.detect(&picture("wide")).unwrap()
    );
}

#[test]
fn resize_is_opencv_bit_for_bit() {
    let refs = refs();
    let mut cases = 0;
    while let Some(src) = refs.get(&format!("resize_{cases}_src")) {
        let (sh, sw) = src.dims2().unwrap();
        for (code, key) in [(OpenCvLinear::Ipp, ""), (OpenCvLinear::OpenCv, "_opencv")] {
            let dst = get(&refs, &format!("resize_{cases}_dst{key}"));
            let (dh, dw) = dst.dims2().unwrap();
            let ours = opencv_resize_linear(
                &flat(src),
                (sw as u32, sh as u32),
                (dw as u32, dh as u32),
                code,
            )
            .unwrap();
            let theirs = flat(dst);
            let differ = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
            assert_eq!(
                differ,
                0,
                "{sw}×{sh} → {dw}×{dh} ({code:?}): {differ} of {} values differ from cv2",
                theirs.len()
            );
        }
        cases += 1;
    }
    assert!(cases >= 9, "only {cases} resize cases in the fixtures");
    // the network's own maps, 2× to 16× up and floored sizes (72×40 from 4×2)
    for k in 2..=5 {
        let src = get(&refs, &format!("wide_projection_{k}"));
        let (_, _, sh, sw) = src.dims4().unwrap();
        let ours = opencv_resize_linear(
            &flat(src),
            (sw as u32, sh as u32),
            (72, 40),
            OpenCvLinear::Ipp,
        )
        .unwrap();
        assert_eq!(
            ours,
            flat(get(&refs, &format!("wide_resized_{k}"))),
            "block {k}"
        );
    }
    // bad grids are errors
    assert!(matches!(
        opencv_resize_linear(&[0.0; 5], (2, 3), (4, 4), OpenCvLinear::Ipp),
        Err(MapError::SizeMismatch { .. })
    ));
    assert!(matches!(
        opencv_resize_linear(&[0.0; 6], (2, 3), (0, 4), OpenCvLinear::OpenCv),
        Err(MapError::Empty { .. })
    ));
}

#[test]
fn edge_map_matches_hed_detector() {
    let det = detector("tiny-hed.pth");
    let refs = refs();
    for name in PICTURES {
        let rgb = picture(name);
        let (values, w, h) = det.detect_values(&rgb).unwrap();
        assert_eq!((w, h), rgb.dimensions());
        let reference = get(&refs, &format!("{name}_edge"));
        let ours = Tensor::from_vec(values, (h as usize, w as usize), &Device::Cpu).unwrap();
        check(&format!("{name} edge values"), &ours, reference, MODULE_TOL);

        let map = det.detect(&rgb).unwrap();
        assert_eq!(map.dimensions(), (w, h));
        let expected = get(&refs, &format!("{name}_edge_u8"))
            .flatten_all()
            .unwrap()
            .to_vec1::<u8>()
            .unwrap();
        let off: Vec<(usize, u8, u8)> = map
            .as_raw()
            .iter()
            .zip(&expected)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (&a, &b))| (i, a, b))
            .collect();
        println!(
            "{name} {w}×{h}: {} of {} edge pixels differ from HEDdetector {off:?}",
            off.len(),
            expected.len()
        );
        assert!(off.len() <= 3, "{name}: {off:?}");
        assert!(off.iter().all(|&(_, a, b)| a.abs_diff(b) == 1), "{off:?}");
    }
}

/// The real `ControlNetHED.pth`'s keys and shapes (recorded by the fixture script) read as the real
/// configuration, and that network runs on the smallest picture it takes.
#[test]
fn real_annotator_shapes_load() {
    let text = std::fs::read_to_string(dir().join("real_state_dict_shapes.json")).unwrap();
    let shapes: HashMap<String, Vec<usize>> = serde_json::from_str(&text).unwrap();
    let tensors: HashMap<String, Tensor> = shapes
        .iter()
        .map(|(k, s)| {
            let t = Tensor::zeros(s.as_slice(), DType::F32, &Device::Cpu).unwrap();
            (k.clone(), t)
        })
        .collect();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let cfg = HedConfig::from_weights(&vb).unwrap();
    assert_eq!(
        cfg,
        HedConfig {
            in_channels: 3,
            blocks: vec![
                block(2, 64),
                block(2, 128),
                block(3, 256),
                block(3, 512),
                block(3, 512)
            ],
        }
    );
    assert_eq!(cfg.min_side(), 16);
    let hed = Hed::new(vb, &cfg).unwrap();
    let x = Tensor::zeros((1, 3, 17, 16), DType::F32, &Device::Cpu).unwrap();
    let sizes: Vec<Vec<usize>> = hed
        .forward(&x)
        .unwrap()
        .iter()
        .map(|p| p.dims().to_vec())
        .collect();
    assert_eq!(
        sizes,
        [
            [1, 1, 17, 16],
            [1, 1, 8, 8],
            [1, 1, 4, 4],
            [1, 1, 2, 2],
            [1, 1, 1, 1]
        ]
    );
}

/// The tiny weights without the tensors `drop`, saved as safetensors in `tmp`.
fn without(tmp: &TempDir, drop: &[&str]) -> PathBuf {
    let mut tensors = load_st(&dir().join("tiny-hed.safetensors"));
    for name in drop {
        assert!(tensors.remove(*name).is_some(), "no tensor {name}");
    }
    let path = tmp.join(format!("without-{}.safetensors", drop.join("+")));
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

#[test]
fn bad_weights_name_the_key_and_file() {
    let tmp = TempDir::new("hed-weights");
    for (drop, named) in [
        (&["block3.projection.bias"][..], "block3.projection.bias"),
        (&["block2.convs.1.weight"][..], "block2.convs.1.weight"),
        (&["norm"][..], "norm"),
        (
            &[
                "block3.convs.0.weight",
                "block3.convs.0.bias",
                "block3.convs.1.weight",
                "block3.convs.1.bias",
                "block3.convs.2.weight",
                "block3.convs.2.bias",
                "block3.projection.weight",
                "block3.projection.bias",
            ][..],
            "block4.",
        ),
    ] {
        let path = without(&tmp, drop);
        let err = HedDetector::load(&path, &Device::Cpu).unwrap_err();
        let text = err.to_string();
        println!("{text}");
        assert!(matches!(err, HedError::Build { .. }), "{err:?}");
        assert!(text.contains(named), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert_eq!(
            text.matches(&path.display().to_string()).count(),
            1,
            "the file is named once: {text}"
        );
    }

    // not weights at all, and no file
    let junk = tmp.join("junk.pth");
    std::fs::write(&junk, b"not a pickle").unwrap();
    let err = HedDetector::load(&junk, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("junk.pth"), "{err}");
    let missing = tmp.join("missing.pth");
    let err = HedDetector::load(&missing, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("missing.pth"), "{err}");
}

#[test]
fn a_folder_needs_the_weights_file() {
    let tmp = TempDir::new("hed-folder");
    let err = HedDetector::load(tmp.path(), &Device::Cpu).unwrap_err();
    assert!(matches!(err, HedError::MissingFile { .. }), "{err:?}");
    assert!(err.to_string().contains(WEIGHTS_FILE), "{err}");
    let err = resolve_hed_weights(Some(tmp.path().to_str().unwrap()), false).unwrap_err();
    assert!(err.to_string().contains(WEIGHTS_FILE), "{err}");

    std::fs::copy(dir().join("tiny-hed.pth"), tmp.join(WEIGHTS_FILE)).unwrap();
    let det = HedDetector::load(tmp.path(), &Device::Cpu).unwrap();
    assert_eq!(det.config().blocks.len(), 5);
    let file = resolve_hed_weights(Some(tmp.path().to_str().unwrap()), false).unwrap();
    assert_eq!(file, tmp.join(WEIGHTS_FILE));
    let given = dir().join("tiny-hed.safetensors");
    assert_eq!(
        resolve_hed_weights(Some(given.to_str().unwrap()), false).unwrap(),
        given
    );
    let err = resolve_hed_weights(Some("no/such/hed.pth"), false).unwrap_err();
    assert!(matches!(err, HedError::NotFound { .. }), "{err:?}");
}

#[test]
fn pictures_the_network_cannot_take_are_refused() {
    let det = detector("tiny-hed.safetensors");
    let err = det.detect(&image::RgbImage::new(0, 0)).unwrap_err();
    assert!(
        matches!(err, HedError::Picture(MapError::Empty { .. })),
        "{err:?}"
    );
    let err = det.detect(&image::RgbImage::new(40, 0)).unwrap_err();
    assert!(matches!(err, HedError::Picture(_)), "{err:?}");
    let err = det.detect(&image::RgbImage::new(15, 64)).unwrap_err();
    assert!(matches!(err, HedError::TooSmall { min: 16, .. }), "{err:?}");
    println!("{err}");
    // the smallest picture: block 5 is 1×1, resized from a single pixel
    let map = det.detect(&image::RgbImage::new(16, 31)).unwrap();
    assert_eq!(map.dimensions(), (16, 31));
    // the network refuses a small tensor with an error, not a panic
    assert!(det
        .network()
        .forward(&Tensor::zeros((1, 3, 8, 8), DType::F32, &Device::Cpu).unwrap())
        .is_err());
    assert!(det
        .network()
        .forward(&Tensor::zeros((1, 4, 32, 32), DType::F32, &Device::Cpu).unwrap())
        .is_err());
}

#[test]
fn detection_is_cancellable() {
    let det = detector("tiny-hed.pth");
    let flag = Arc::new(AtomicBool::new(true));
    let err =
        glichen::model::interrupt::with_flag(&flag, || det.detect(&picture("square"))).unwrap_err();
    assert!(matches!(err, HedError::Cancelled), "{err:?}");
}

/// The hub file from the Hugging Face cache without a network, and an error that says what to fetch
/// when it is not there. Changes `HF_HOME` and `HF_ENDPOINT` for this process: no other test here
/// reads them.
#[test]
fn hub_weights_come_from_the_cache_offline() {
    let home = TempDir::new("hed-hf-home");
    let (repo, revision) = glichen::weights::catalogue::find("hed")
        .map(|e| (e.repo, e.revision))
        .unwrap_or_else(|| (HUB_REPO.to_string(), "main".to_string()));
    let folder = home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = folder.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::copy(dir().join("tiny-hed.pth"), snapshot.join(WEIGHTS_FILE)).unwrap();
    let reference = folder.join("refs").join(&revision);
    std::fs::create_dir_all(reference.parent().unwrap()).unwrap();
    std::fs::write(&reference, commit).unwrap();
    // an endpoint that cannot answer, whatever the machine's network
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");

    let file = resolve_hed_weights(None, false).unwrap();
    assert_eq!(file, snapshot.join(WEIGHTS_FILE));
    HedDetector::load(&file, &Device::Cpu).unwrap();

    std::fs::remove_file(snapshot.join(WEIGHTS_FILE)).unwrap();
    let err = resolve_hed_weights(None, false).unwrap_err();
    let text = err.to_string();
    println!("{text}");
    assert!(matches!(err, HedError::Unavailable { .. }), "{err:?}");
    for needed in [repo.as_str(), WEIGHTS_FILE, "glichen fetch hed"] {
        assert!(text.contains(needed), "missing {needed:?}: {text}");
    }
}
