//! The arguments that name one subject's scan against a normative database, shared by
//! `pedinorm volumes` and `pedinorm normdb add`, and the reading of `--sex`.

use anyhow::Context;
use pedinorm_templates::stats::Sex;
use std::path::PathBuf;

/// One subject's scan and what is known of the subject.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// The normative database (HDF5).
    #[arg(long)]
    pub normdb: PathBuf,
    /// The subject's T1-weighted image (NIfTI).
    #[arg(long)]
    pub image: PathBuf,
    /// Age at scan, years.
    #[arg(long)]
    pub age: f64,
    /// Sex (F or M).
    #[arg(long)]
    pub sex: Option<String>,
    /// Scanner or site label, as recorded for the database's normals.
    #[arg(long, alias = "scanner")]
    pub site: Option<String>,
}

/// `--sex` read as F or M; `None` when not given.
pub fn parse_sex(code: Option<&str>) -> anyhow::Result<Option<Sex>> {
    code.map(|code| Sex::parse(code).with_context(|| format!("--sex {code:?}: must be F or M"))).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        scan: ScanArgs,
    }

    #[test]
    fn scan_arguments_take_the_site_under_either_name_and_check_the_sex() {
        let words = ["x", "--normdb", "n.h5", "--image", "i.nii.gz", "--age", "6.5", "--scanner", "S1"];
        let scan = Command::try_parse_from(words).unwrap().scan;
        assert_eq!((scan.age, scan.site.as_deref(), scan.sex.as_deref()), (6.5, Some("S1"), None));
        assert!(Command::try_parse_from(["x", "--normdb", "n.h5", "--image", "i", "--site", "S2"]).is_err());
        assert_eq!(parse_sex(Some("F")).unwrap(), Some(Sex::Female));
        assert_eq!(parse_sex(None).unwrap(), None);
        assert!(parse_sex(Some("X")).unwrap_err().to_string().contains("--sex \"X\": must be F or M"));
    }
}
