//! CLIP's BPE tokenizer, from `tokenizer.json` when the folder has one, else built from
//! `vocab.json` + `merges.txt` the way transformers' `CLIPTokenizer` builds its fast tokenizer
//! (the real GLIGEN hub repositories ship only those two files).

use super::WeightsError;
use std::path::{Path, PathBuf};
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

/// CLIP's word splitting: contractions, letter runs, single digits, punctuation runs.
const BUILTIN_VOCAB: &str = include_str!("../../assets/clip/vocab.json");
const BUILTIN_MERGES: &str = include_str!("../../assets/clip/merges.txt");

const CLIP_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Texts longer than this are tokenized only up to a word boundary near it: the encoder reads at
/// most `max_length` tokens, and tokenizing a multi-megabyte prompt whole takes gigabytes.
const LONG_TEXT_BYTES: usize = 16 * 1024;
/// Beyond this a text whose first [`LONG_TEXT_BYTES`] hold too few words to fill the window (one
/// giant "word") is refused rather than tokenized whole.
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;

/// Token ids of one prompt, padded for the text encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedPrompt {
    pub ids: Vec<u32>,
    /// Content tokens the prompt had before truncation (without start/end tokens); for a text
    /// longer than 16 KiB, only those of its first 16 KiB (a lower bound, see `counted_whole`).
    pub content_tokens: usize,
    /// Content tokens that were cut to fit the encoder's window (a lower bound likewise).
    pub truncated_tokens: usize,
    /// Whether the whole text was tokenized, so that the two counts are exact.
    pub counted_whole: bool,
}

#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    pub bos_id: u32,
    pub eos_id: u32,
    pub pad_id: u32,
    pub max_length: usize,
    source: PathBuf,
}

fn special_token(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

impl ClipTokenizer {
    /// Loads from a tokenizer folder (`tokenizer/` of a diffusers model).
    pub fn from_folder(dir: &Path) -> Result<Self, WeightsError> {
        let json = dir.join("tokenizer.json");
        let inner = if json.is_file() {
            Tokenizer::from_file(&json).map_err(|e| WeightsError::Tokenizer {
                path: json.clone(),
                message: e.to_string(),
            })?
        } else {
            Self::build_from_vocab(&dir.join("vocab.json"), &dir.join("merges.txt"))?
        };
        // Padding token and window come from the tokenizer config when present (SD pads with the
        // end token; some repos name "!" instead).
        let mut pad_token = None;
        let mut max_length = 77usize;
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let p = dir.join(name);
            if let Ok(text) = std::fs::read_to_string(&p) {
                let v: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| WeightsError::Config {
                        path: p.clone(),
                        message: e.to_string(),
                    })?;
                if pad_token.is_none() {
                    pad_token = v.get("pad_token").and_then(special_token);
                }
                // transformers writes a huge sentinel for "no limit"; such values keep CLIP's 77.
                if let Some(m) = v
                    .get("model_max_length")
                    .and_then(serde_json::Value::as_u64)
                {
                    if m < 3 {
                        return Err(WeightsError::Config {
                            path: p.clone(),
                            message: format!(
                                "model_max_length {m} leaves no room for a token (the window holds \
                                 the start and end tokens, so it must be at least 3)"
                            ),
                        });
                    }
                    if m <= 4096 {
                        max_length = m as usize;
                    }
                }
            }
        }
        Self::with_specials(inner, pad_token.as_deref(), max_length, dir.to_path_buf())
    }

    /// A tokenizer from CLIP's `vocab.json` and `merges.txt`.
    pub fn from_vocab_files(vocab: &Path, merges: &Path) -> Result<Self, WeightsError> {
        let inner = Self::build_from_vocab(vocab, merges)?;
        Self::with_specials(inner, None, 77, vocab.to_path_buf())
    }

    fn with_specials(
        inner: Tokenizer,
        pad: Option<&str>,
        max_length: usize,
        source: PathBuf,
    ) -> Result<Self, WeightsError> {
        let id = |tok: &str| {
            inner
                .token_to_id(tok)
                .ok_or_else(|| WeightsError::Tokenizer {
                    path: source.clone(),
                    message: format!("the vocabulary has no {tok} token"),
                })
        };
        let bos_id = id("<|startoftext|>")?;
        let eos_id = id("<|endoftext|>")?;
        let pad_id = match pad {
            Some(p) => id(p)?,
            None => eos_id,
        };
        Ok(Self {
            inner,
            bos_id,
            eos_id,
            pad_id,
            max_length,
            source,
        })
    }

    /// CLIP's own vocabulary, compiled in: the original GLIGEN checkpoints carry no tokenizer.
    pub fn builtin() -> Result<Self, WeightsError> {
        let source = PathBuf::from("assets/clip/vocab.json");
        let inner = Self::build(BUILTIN_VOCAB, BUILTIN_MERGES, &source)?;
        Self::with_specials(inner, None, 77, source)
    }

    fn build_from_vocab(vocab: &Path, merges: &Path) -> Result<Tokenizer, WeightsError> {
        for p in [vocab, merges] {
            if !p.is_file() {
                return Err(WeightsError::Tokenizer {
                    path: p.to_path_buf(),
                    message:
                        "missing (a tokenizer needs tokenizer.json, or vocab.json and merges.txt)"
                            .into(),
                });
            }
        }
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| WeightsError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        Self::build(&read(vocab)?, &read(merges)?, vocab)
    }

    /// The fast tokenizer transformers' `CLIPTokenizer` builds from a vocabulary and merges.
    fn build(vocab_json: &str, merges_txt: &str, source: &Path) -> Result<Tokenizer, WeightsError> {
        let err = |e: tokenizers::Error| WeightsError::Tokenizer {
            path: source.to_path_buf(),
            message: e.to_string(),
        };
        let vocab: std::collections::HashMap<String, u32> = serde_json::from_str(vocab_json)
            .map_err(|e| WeightsError::Tokenizer {
                path: source.to_path_buf(),
                message: format!("vocab.json: {e}"),
            })?;
        let vocab: tokenizers::models::bpe::Vocab = vocab.into_iter().collect();
        let merges: Vec<(String, String)> = merges_txt
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .end_of_word_suffix("</w>".into())
            .unk_token("<|endoftext|>".into())
            .fuse_unk(false)
            .build()
            .map_err(err)?;
        let mut tok = Tokenizer::new(bpe);
        let normalizer = NormalizerSequence::new(vec![
            NFC.into(),
            Replace::new(
                tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
                " ",
            )
            .map_err(err)?
            .into(),
            Lowercase.into(),
        ]);
        tok.with_normalizer(Some(normalizer));
        let split = Split::new(
            SplitPattern::Regex(CLIP_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(err)?;
        let pre =
            PreTokenizerSequence::new(vec![split.into(), ByteLevel::new(false, true, true).into()]);
        tok.with_pre_tokenizer(Some(pre));
        tok.with_decoder(Some(ByteLevel::default()));
        Ok(tok)
    }

    /// Content token ids of `text` (no start/end tokens, no truncation).
    pub fn content_ids(&self, text: &str) -> Result<Vec<u32>, WeightsError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| WeightsError::Tokenizer {
                path: self.source.clone(),
                message: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// `[bos, content…, eos]`, truncated to `max_length` and, when `pad` is set, padded to it with
    /// the padding token: what `CLIPTokenizer(padding="max_length", truncation=True)` returns.
    ///
    /// A text longer than 16 KiB is tokenized up to the last whitespace in its first 16 KiB when
    /// that prefix fills the window: every word before the cut is whole and CLIP tokenizes word by
    /// word, so the kept tokens are exactly those of the whole text. One longer than 1 MiB whose
    /// prefix does not fill the window is refused.
    pub fn encode(&self, text: &str, pad: bool) -> Result<TokenizedPrompt, WeightsError> {
        let room = self.max_length.saturating_sub(2);
        let (content, counted_whole) = match self.long_text_prefix(text, room)? {
            Some(content) => (content, false),
            None => (self.content_ids(text)?, true),
        };
        let kept = content.len().min(room);
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend_from_slice(&content[..kept]);
        ids.push(self.eos_id);
        if pad {
            ids.resize(self.max_length, self.pad_id);
        }
        Ok(TokenizedPrompt {
            ids,
            content_tokens: content.len(),
            truncated_tokens: content.len() - kept,
            counted_whole,
        })
    }

    /// The content ids of a long text's prefix when they fill `room` (see [`Self::encode`]);
    /// `None` when the text is short enough to tokenize whole.
    fn long_text_prefix(&self, text: &str, room: usize) -> Result<Option<Vec<u32>>, WeightsError> {
        if text.len() <= LONG_TEXT_BYTES {
            return Ok(None);
        }
        let mut end = LONG_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if let Some(cut) = text[..end].rfind(char::is_whitespace) {
            let ids = self.content_ids(&text[..cut])?;
            if ids.len() > room {
                return Ok(Some(ids));
            }
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(WeightsError::Tokenizer {
                path: self.source.clone(),
                message: format!(
                    "a text of {} bytes whose first {LONG_TEXT_BYTES} bytes hold fewer than {room} \
                     tokens is refused (texts are read up to {MAX_TEXT_BYTES} bytes)",
                    text.len()
                ),
            });
        }
        Ok(None)
    }
}
