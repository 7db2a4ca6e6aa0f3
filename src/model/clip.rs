//! CLIP text tower (transformers' `CLIPTextModel`), sized from `text_encoder/config.json`.
//! candle-transformers' version fixes the sequence length to `max_position_embeddings`, the layer
//! norm epsilon and keeps its config private, so tiny and non-SD text towers could not be built.

use super::attention::scaled_dot_product_attention;
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

fn d_vocab() -> usize {
    49408
}
fn d_hidden() -> usize {
    512
}
fn d_inter() -> usize {
    2048
}
fn d_heads() -> usize {
    8
}
fn d_layers() -> usize {
    12
}
fn d_pos() -> usize {
    77
}
fn d_act() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

/// The MLP activation of a CLIP tower (transformers' `ACT2FN` names a CLIP config can carry).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Activation {
    QuickGelu,
    GeluErf,
    GeluTanh,
}

impl Activation {
    /// An unknown name is refused rather than replaced: a silently different activation would
    /// still produce plausible pictures. `tower` names the network in the message.
    pub(crate) fn parse(name: &str, tower: &str) -> Result<Self> {
        Ok(match name {
            "quick_gelu" => Self::QuickGelu,
            // transformers' "gelu" is the exact erf form; candle's `gelu` is the tanh approximation.
            "gelu" => Self::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            other => candle_core::bail!("{tower} hidden_act {other:?} is not supported"),
        })
    }
}

impl Module for Activation {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Self::GeluErf => xs.gelu_erf(),
            Self::GeluTanh => xs.gelu(),
        }
    }
}

/// Pre-norm transformer layer (`encoder.layers.N`) shared by the text and vision towers.
#[derive(Debug, Clone)]
pub(crate) struct EncoderLayer {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    layer_norm2: LayerNorm,
    heads: usize,
    act: Activation,
}

impl EncoderLayer {
    pub(crate) fn new(
        vb: VarBuilder,
        hidden: usize,
        intermediate: usize,
        heads: usize,
        eps: f64,
        act: Activation,
    ) -> Result<Self> {
        let d = hidden;
        let a = vb.pp("self_attn");
        Ok(Self {
            q_proj: linear(d, d, a.pp("q_proj"))?,
            k_proj: linear(d, d, a.pp("k_proj"))?,
            v_proj: linear(d, d, a.pp("v_proj"))?,
            out_proj: linear(d, d, a.pp("out_proj"))?,
            layer_norm1: layer_norm(d, eps, vb.pp("layer_norm1"))?,
            fc1: linear(d, intermediate, vb.pp("mlp.fc1"))?,
            fc2: linear(intermediate, d, vb.pp("mlp.fc2"))?,
            layer_norm2: layer_norm(d, eps, vb.pp("layer_norm2"))?,
            heads,
            act,
        })
    }

    /// `mask` (additive, `[1, 1, n, n]`) is the text tower's causal mask; the vision tower has none.
    fn attention(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, n, d) = xs.dims3()?;
        let hd = d / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, n, self.heads, hd))?
                .transpose(1, 2)?
                .reshape((b * self.heads, n, hd))?
                .contiguous()
        };
        let q = split(self.q_proj.forward(xs)?)?;
        let k = split(self.k_proj.forward(xs)?)?;
        let v = split(self.v_proj.forward(xs)?)?;
        let Some(mask) = mask else {
            // Scores and softmax in f32 whatever the model dtype.
            let out = scaled_dot_product_attention(&q, &k, &v, (hd as f64).powf(-0.5))?;
            let out = out
                .reshape((b, self.heads, n, hd))?
                .transpose(1, 2)?
                .reshape((b, n, d))?;
            return self.out_proj.forward(&out);
        };
        // The causal mask is added to the scores, so attention is done here rather than through the
        // shared helper.
        let scores = (q
            .to_dtype(DType::F32)?
            .matmul(&k.to_dtype(DType::F32)?.t()?)?
            * (hd as f64).powf(-0.5))?;
        let scores = scores
            .reshape((b, self.heads, n, n))?
            .broadcast_add(mask)?
            .reshape((b * self.heads, n, n))?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        let out = probs
            .matmul(&v)?
            .reshape((b, self.heads, n, hd))?
            .transpose(1, 2)?
            .reshape((b, n, d))?;
        self.out_proj.forward(&out)
    }

    pub(crate) fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let xs = (self.attention(&self.layer_norm1.forward(xs)?, mask)? + xs)?;
        let h = self.fc2.forward(
            &self
                .act
                .forward(&self.fc1.forward(&self.layer_norm2.forward(&xs)?)?)?,
        )?;
        h + xs
    }
}

/// Output of the text tower for a batch of token sequences.
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// `[B, T, hidden]` after the final layer norm (SD's conditioning).
    pub last_hidden_state: Tensor,
    /// `[B, hidden]`: the hidden state at each sequence's first end-of-text token (GLIGEN's phrase
    /// embedding).
    pub pooler_output: Tensor,
}

#[derive(Debug, Clone)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    pub config: ClipTextConfig,
}

impl ClipTextModel {
    /// `vb` points at the tower's root (`text_model` in transformers-4 checkpoints, the file root in
    /// transformers-5 ones); the weights module picks it.
    pub fn new(vb: VarBuilder, c: &ClipTextConfig) -> Result<Self> {
        // Checked before any weight is read: a zero or non-dividing head count would otherwise end
        // in a division by zero or a shape mismatch that names no setting.
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            candle_core::bail!(
                "text encoder hidden_size {} is not divisible by num_attention_heads {}",
                c.hidden_size,
                c.num_attention_heads
            );
        }
        if c.max_position_embeddings == 0 || c.vocab_size == 0 {
            candle_core::bail!(
                "text encoder max_position_embeddings {} and vocab_size {} must be positive",
                c.max_position_embeddings,
                c.vocab_size
            );
        }
        let act = Activation::parse(&c.hidden_act, "text encoder")?;
        let e = vb.pp("embeddings");
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp(format!("encoder.layers.{i}"));
                let (d, inter, heads) = (c.hidden_size, c.intermediate_size, c.num_attention_heads);
                EncoderLayer::new(vb, d, inter, heads, c.layer_norm_eps, act)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding: embedding(c.vocab_size, c.hidden_size, e.pp("token_embedding"))?,
            position_embedding: embedding(
                c.max_position_embeddings,
                c.hidden_size,
                e.pp("position_embedding"),
            )?,
            layers,
            final_layer_norm: layer_norm(
                c.hidden_size,
                c.layer_norm_eps,
                vb.pp("final_layer_norm"),
            )?,
            config: c.clone(),
        })
    }

    fn causal_mask(n: usize, dev: &Device) -> Result<Tensor> {
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        Tensor::from_vec(mask, (1, 1, n, n), dev)
    }

    /// `input_ids` `[B, T]` (u32), T ≤ max_position_embeddings; `eos_token_id` picks the pooled
    /// position. Padding after the end token never reaches earlier positions (the mask is causal),
    /// so padded batches pool exactly as single sequences.
    pub fn forward(&self, input_ids: &Tensor, eos_token_id: u32) -> Result<ClipTextOutput> {
        let (b, n) = input_ids.dims2()?;
        if n > self.config.max_position_embeddings {
            candle_core::bail!(
                "{n} tokens exceed the text encoder's {} positions",
                self.config.max_position_embeddings
            );
        }
        let dev = input_ids.device();
        let positions = Tensor::arange(0u32, n as u32, dev)?;
        let xs = self
            .token_embedding
            .forward(input_ids)?
            .broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let mask = Self::causal_mask(n, dev)?;
        let mut xs = xs;
        for layer in &self.layers {
            xs = layer.forward(&xs, Some(&mask))?;
        }
        let last_hidden_state = self.final_layer_norm.forward(&xs)?;
        let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let mut pooled = Vec::with_capacity(b);
        for (row, seq) in ids.iter().enumerate() {
            let pos = seq.iter().position(|&t| t == eos_token_id).unwrap_or(n - 1);
            pooled.push(last_hidden_state.i((row, pos))?);
        }
        let pooler_output = Tensor::stack(&pooled, 0)?;
        Ok(ClipTextOutput {
            last_hidden_state,
            pooler_output,
        })
    }
}
