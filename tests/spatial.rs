//! The spatial-map networks of original GLIGEN checkpoints (HED, Canny, depth, normal, semantic)
//! against the original code run on the tiny checkpoints in `tests/fixtures/original/`
//! (`spatial_refs/<kind>.{safetensors,json}`): the ConvNeXt input and output, the position net's
//! tokens with mask 1 and for the null input, and the downsampler, each within relative L2 1e-5
//! (float32, CPU). Print the measured errors with
//! `cargo test --release --features testing --test spatial -- --nocapture`.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{check, fixtures, get, load_st, MODULE_TOL};
use glichen::layout::MapKind;
use glichen::model::spatial::{GroundingDownsampler, SpatialPositionNet};
use glichen::weights::TensorFile;
use std::collections::HashMap;
use std::path::PathBuf;

fn original_dir() -> PathBuf {
    fixtures().join("original")
}

fn checkpoint(kind: MapKind) -> VarBuilder<'static> {
    let path = original_dir().join(format!("gligen-tiny-{}.pth", kind.as_str()));
    TensorFile::open_pickle_key(&path, "model")
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_var_builder(DType::F32, &Device::Cpu)
}

struct Reference {
    tensors: HashMap<String, Tensor>,
    json: serde_json::Value,
}

fn reference(kind: MapKind) -> Reference {
    let dir = original_dir().join("spatial_refs");
    let json_path = dir.join(format!("{}.json", kind.as_str()));
    let text = std::fs::read_to_string(&json_path)
        .unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
    Reference {
        tensors: load_st(&dir.join(format!("{}.safetensors", kind.as_str()))),
        json: serde_json::from_str(&text).unwrap(),
    }
}

impl Reference {
    fn usize(&self, key: &str) -> usize {
        self.json[key]
            .as_u64()
            .unwrap_or_else(|| panic!("json `{key}`")) as usize
    }

    fn list(&self, key: &str) -> Vec<usize> {
        let items = self.json[key]
            .as_array()
            .unwrap_or_else(|| panic!("json `{key}`"));
        items.iter().map(|v| v.as_u64().unwrap() as usize).collect()
    }

    fn latent_hw(&self) -> (usize, usize) {
        let l = self.list("latent");
        (l[0], l[1])
    }
}

fn nets(kind: MapKind) -> (SpatialPositionNet, GroundingDownsampler) {
    let vb = checkpoint(kind);
    let pos = SpatialPositionNet::new(vb.pp("position_net"), kind)
        .unwrap_or_else(|e| panic!("{kind:?} position net: {e}"));
    let down = GroundingDownsampler::new(vb.pp("downsample_net"), kind, pos.resize_input())
        .unwrap_or_else(|e| panic!("{kind:?} downsampler: {e}"));
    (pos, down)
}

#[test]
fn spatial_nets_match_the_original_code() {
    for kind in MapKind::ALL {
        let name = kind.as_str();
        let r = reference(kind);
        let (pos, down) = nets(kind);
        assert_eq!(pos.backbone().depths(), r.list("convnext_depths"), "{name}");
        assert_eq!(pos.backbone().dims(), r.list("convnext_dims"), "{name}");
        assert_eq!(pos.resize_input(), r.usize("resize_input"), "{name}");
        assert_eq!(pos.token_count(), r.usize("num_tokens"), "{name}");
        assert_eq!(pos.out_dim(), r.usize("context_dim"), "{name}");
        assert_eq!(pos.backbone().out_dim(), r.usize("feature_dim"), "{name}");
        let (map, mask) = (get(&r.tensors, "map"), get(&r.tensors, "mask"));

        let input = pos.backbone_input(map).unwrap();
        let input_ref = if kind == MapKind::Sem {
            "in_conv_out"
        } else {
            "convnext_in"
        };
        check(
            &format!("{name} {input_ref}"),
            &input,
            get(&r.tensors, input_ref),
            MODULE_TOL,
        );
        let features = pos.backbone().forward(&input).unwrap();
        check(
            &format!("{name} convnext_out"),
            &features,
            get(&r.tensors, "convnext_out"),
            MODULE_TOL,
        );
        let objs = pos.forward(map, mask).unwrap();
        check(
            &format!("{name} objs"),
            &objs,
            get(&r.tensors, "objs"),
            MODULE_TOL,
        );
        let null_ref = get(&r.tensors, "null_objs");
        check(
            &format!("{name} null_objs"),
            &pos.null_tokens(1).unwrap(),
            null_ref,
            MODULE_TOL,
        );
        // The null input run through the whole net, as the original's unconditional pass does.
        let zeros = map.zeros_like().unwrap();
        let null_full = pos.forward(&zeros, &mask.zeros_like().unwrap()).unwrap();
        check(
            &format!("{name} null_objs (full net)"),
            &null_full,
            null_ref,
            MODULE_TOL,
        );

        let latent = r.latent_hw();
        if let Some(resized_ref) = r.tensors.get("ds_resized") {
            let resized = down.resized(map, latent).unwrap();
            check(
                &format!("{name} ds_resized"),
                &resized,
                resized_ref,
                MODULE_TOL,
            );
        }
        let downsampled_ref = get(&r.tensors, "downsampled");
        let downsampled = down.forward(map, latent).unwrap();
        check(
            &format!("{name} downsampled"),
            &downsampled,
            downsampled_ref,
            MODULE_TOL,
        );
        assert_eq!(
            down.out_channels(),
            downsampled_ref.dim(1).unwrap(),
            "{name}"
        );
        assert_eq!(
            4 + down.out_channels(),
            r.usize("first_conv_in_channels"),
            "{name}"
        );
    }
}

/// A batch mixing a real map (mask 1) and the null input (mask 0) gives each row its own result,
/// and one mask value is shared by the whole batch, as the original's broadcasting does.
#[test]
fn masks_broadcast_per_map() {
    let kind = MapKind::Canny;
    let r = reference(kind);
    let (pos, _) = nets(kind);
    let map = get(&r.tensors, "map");
    let both = Tensor::cat(&[map, &map.zeros_like().unwrap()], 0).unwrap();
    let mask = Tensor::new(&[1f32, 0.0], &Device::Cpu).unwrap();
    let tokens = pos.forward(&both, &mask).unwrap();
    assert_eq!(tokens.dims(), &[2, pos.token_count(), pos.out_dim()]);
    check(
        "batch row 0 (mask 1)",
        &tokens.narrow(0, 0, 1).unwrap(),
        get(&r.tensors, "objs"),
        MODULE_TOL,
    );
    let null_ref = get(&r.tensors, "null_objs");
    check(
        "batch row 1 (mask 0)",
        &tokens.narrow(0, 1, 1).unwrap(),
        null_ref,
        MODULE_TOL,
    );
    let shared = pos
        .forward(&both, &Tensor::new(&[0f32], &Device::Cpu).unwrap())
        .unwrap();
    check(
        "shared mask 0",
        &shared,
        &pos.null_tokens(2).unwrap(),
        MODULE_TOL,
    );
    assert!(pos
        .forward(&both, &Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap())
        .is_err());
}

fn message(result: candle_core::Result<Tensor>) -> String {
    match result {
        Ok(t) => panic!("expected an error, got a tensor {:?}", t.dims()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn wrong_sizes_and_channels_are_refused_clearly() {
    let r = reference(MapKind::Canny);
    let (pos, down) = nets(MapKind::Canny);
    let map = get(&r.tensors, "map");
    // The tiny checkpoint's maps are resized to 128: its features are 32×32.
    let e = message(down.forward(map, (64, 48)));
    assert!(e.contains("32×32") && e.contains("48×64"), "{e}");
    println!("wrong latent size: {e}");
    // Any map size goes through (it is resized first); the channel count must match.
    let small = map.narrow(2, 0, 40).unwrap();
    assert_eq!(
        down.forward(&small, r.latent_hw()).unwrap().dims(),
        &[1, 8, 32, 32]
    );
    let one = map.narrow(1, 0, 1).unwrap();
    let e = message(pos.forward(&one, get(&r.tensors, "mask")));
    assert!(e.contains("3 channels") && e.contains("has 1"), "{e}");
    let e = message(down.forward(&one, r.latent_hw()));
    assert!(e.contains("3 channels"), "{e}");

    let (sem_pos, sem_down) = nets(MapKind::Sem);
    assert_eq!(sem_pos.map_channels(), 152);
    let e = message(sem_down.forward(map, r.latent_hw()));
    assert!(e.contains("152 channels"), "{e}");
    // HED has no weights: its output always has the latent grid's size.
    let (_, hed_down) = nets(MapKind::Hed);
    assert_eq!(
        hed_down.forward(map, (24, 40)).unwrap().dims(),
        &[1, 1, 24, 40]
    );
}

#[test]
fn a_checkpoint_of_another_kind_is_refused() {
    let canny = checkpoint(MapKind::Canny);
    let e = SpatialPositionNet::new(canny.pp("position_net"), MapKind::Sem).unwrap_err();
    assert!(e.to_string().contains("in_conv"), "{e}");
    let sem = checkpoint(MapKind::Sem);
    let e = SpatialPositionNet::new(sem.pp("position_net"), MapKind::Depth).unwrap_err();
    assert!(e.to_string().contains("semantic"), "{e}");
    let e = GroundingDownsampler::new(sem.pp("downsample_net"), MapKind::Normal, 128).unwrap_err();
    assert!(e.to_string().contains("152 channels"), "{e}");
}

/// In f64 the nets take candle's generic operations (grouped convolution for the depthwise
/// filters, candle's convolutions) instead of the CPU f32 kernels: the same results.
#[test]
fn generic_path_matches_in_f64() {
    for kind in [MapKind::Normal, MapKind::Sem] {
        let name = kind.as_str();
        let r = reference(kind);
        let path = original_dir().join(format!("gligen-tiny-{name}.pth"));
        let vb = TensorFile::open_pickle_key(&path, "model")
            .unwrap()
            .into_var_builder(DType::F64, &Device::Cpu);
        let pos = SpatialPositionNet::new(vb.pp("position_net"), kind).unwrap();
        let down =
            GroundingDownsampler::new(vb.pp("downsample_net"), kind, pos.resize_input()).unwrap();
        let (map, mask) = (get(&r.tensors, "map"), get(&r.tensors, "mask"));
        let objs = pos.forward(map, mask).unwrap();
        assert_eq!(objs.dtype(), DType::F64);
        check(
            &format!("{name} objs (f64)"),
            &objs,
            get(&r.tensors, "objs"),
            MODULE_TOL,
        );
        let downsampled = down.forward(map, r.latent_hw()).unwrap();
        check(
            &format!("{name} downsampled (f64)"),
            &downsampled,
            get(&r.tensors, "downsampled"),
            MODULE_TOL,
        );
    }
}
