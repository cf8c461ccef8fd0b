//! The released checkpoints by name: `--weights yolact_plus_resnet50` (and the node's `weights`
//! parameter) fetches the reference's 2019 file from its Hugging Face repo into the standard
//! Hugging Face cache with `hf-hub`, so a second run needs no network. `HF_HOME` (cache place),
//! `HF_ENDPOINT` (a mirror) and a stored or `HF_TOKEN` token work as in the Python `huggingface_hub`.

use std::path::PathBuf;

use hf_hub::api::sync::ApiBuilder;

use crate::error::{Error, Result};

/// One released checkpoint: the config it was trained with, where it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub config: &'static str,
    pub repo: &'static str,
    pub file: &'static str,
}

/// The six checkpoints of the reference's README, under their original file names.
pub const RELEASED: [Released; 6] = [
    Released {
        config: "yolact_base",
        repo: "dbolya/yolact-base",
        file: "yolact_base_54_800000.pth",
    },
    Released {
        config: "yolact_resnet50",
        repo: "dbolya/yolact-resnet50",
        file: "yolact_resnet50_54_800000.pth",
    },
    Released {
        config: "yolact_darknet53",
        repo: "dbolya/yolact-darknet53",
        file: "yolact_darknet53_54_800000.pth",
    },
    Released {
        config: "yolact_im700",
        repo: "dbolya/yolact-im700",
        file: "yolact_im700_54_800000.pth",
    },
    Released {
        config: "yolact_plus_base",
        repo: "dbolya/yolact-plus-base",
        file: "yolact_plus_base_54_800000.pth",
    },
    Released {
        config: "yolact_plus_resnet50",
        repo: "dbolya/yolact-plus-resnet50",
        file: "yolact_plus_resnet50_54_800000.pth",
    },
];

/// The released checkpoint called `name` (a config name), if there is one.
pub fn released(name: &str) -> Option<&'static Released> {
    RELEASED.iter().find(|r| r.config == name)
}

impl Released {
    /// The file's URL at `endpoint` (the hub's own layout: `{endpoint}/{repo}/resolve/main/{file}`).
    pub fn url(&self, endpoint: &str) -> String {
        format!(
            "{}/{}/resolve/main/{}",
            endpoint.trim_end_matches('/'),
            self.repo,
            self.file
        )
    }

    /// The local path of the checkpoint: from the cache when it is there, else downloaded into it
    /// (with a progress bar on stderr when `progress`).
    pub fn fetch(&self, progress: bool) -> Result<PathBuf> {
        // hf-hub draws its own progress bar (on stderr) while downloading.
        let builder = ApiBuilder::from_env().with_progress(progress);
        let endpoint =
            std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
        let url = self.url(&endpoint);
        let fail = |what: String| {
            Error::Parameter(format!(
                "could not fetch the released `{}` weights from {url}: {what}. Without network, \
                 download that file by hand and pass its path to --weights (or the node's \
                 `weights` parameter); a file already in the Hugging Face cache ($HF_HOME/hub) is \
                 used without network",
                self.config
            ))
        };
        let api = builder.build().map_err(|e| fail(e.to_string()))?;
        // `get` looks in the cache first and only then downloads.
        let result = api.model(self.repo.to_string()).get(self.file);
        result.map_err(|e| fail(e.to_string()))
    }
}
