//! A site's Slurm settings, kept in a file (`--slurm-config`, `PEDINORM_SLURM_CONFIG`) so every
//! build on a cluster uses them.

use std::path::{Path, PathBuf};

/// Why a site file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("Slurm site settings {path}: {message}")]
pub struct SlurmSiteError {
    /// The site file.
    pub path: PathBuf,
    /// What is wrong (the offending key or the OS error).
    pub message: String,
}

/// A site's Slurm settings.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSite {
    /// Partition.
    pub partition: Option<String>,
    /// Account.
    pub account: Option<String>,
    /// Extra #SBATCH options, e.g. ["--qos=short", "--constraint=avx2"].
    #[serde(default)]
    pub sbatch_options: Vec<String>,
    /// At most this many array tasks at once.
    pub max_concurrent: Option<usize>,
}

impl SlurmSite {
    /// Reads a site file; errors name the file and the offending key.
    pub fn read(path: &Path) -> Result<Self, SlurmSiteError> {
        let error = |message: String| SlurmSiteError { path: path.to_owned(), message };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let site: Self = toml::from_str(&text).map_err(|e| error(e.to_string()))?;
        if site.max_concurrent == Some(0) {
            return Err(error("max_concurrent must be at least 1".into()));
        }
        Ok(site)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_file_is_read_and_bad_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("slurm.toml");
        std::fs::write(
            &good,
            "partition = \"short\"\naccount = \"neuro\"\nsbatch_options = [\"--qos=low\"]\nmax_concurrent = 50\n",
        )
        .unwrap();
        let site = SlurmSite::read(&good).unwrap();
        assert_eq!(site.partition.as_deref(), Some("short"));
        assert_eq!(site.account.as_deref(), Some("neuro"));
        assert_eq!(site.sbatch_options, vec!["--qos=low".to_string()]);
        assert_eq!(site.max_concurrent, Some(50));

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "partion = \"short\"\n").unwrap();
        let message = SlurmSite::read(&bad).unwrap_err().to_string();
        assert!(message.contains("bad.toml") && message.contains("partion"), "{message}");
        std::fs::write(&bad, "max_concurrent = 0\n").unwrap();
        assert!(SlurmSite::read(&bad).unwrap_err().to_string().contains("max_concurrent"));
        assert!(SlurmSite::read(&dir.path().join("missing.toml")).is_err());
    }
}
