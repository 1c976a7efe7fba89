//! The measures table: one row per subject, tab-separated, with a header
//! `subject  age  sex  site  <measure>…` (sex `F`, `M` or empty; site may be empty; a missing
//! measure is empty or `NA`). It is what `pedinorm volumes` writes per subject and what
//! `pedinorm centiles` fits and scores.

use pedinorm_templates::centiles::{Covariates, MeasureTable};
use pedinorm_templates::stats::Sex;
use std::path::{Path, PathBuf};

/// The leading columns, in order.
pub const COVARIATE_COLUMNS: [&str; 4] = ["subject", "age", "sex", "site"];

/// Why a measures table could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MeasuresError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line breaks a rule of the format.
    #[error("{path}, line {line}, column `{column}`: {rule}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The column.
        column: String,
        /// The rule broken.
        rule: String,
    },
}

/// A measures table with the subjects' names.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectMeasures {
    /// Subject names (pseudonyms), one per row.
    pub subjects: Vec<String>,
    /// The measures and covariates.
    pub table: MeasureTable,
}

/// Reads a measures table.
pub fn read_measures(path: &Path) -> Result<SubjectMeasures, MeasuresError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| MeasuresError::Io { path: path.to_owned(), source })?;
    parse_measures(&text, path)
}

/// Parses the text of a measures table read from `path` (named in errors).
pub fn parse_measures(text: &str, path: &Path) -> Result<SubjectMeasures, MeasuresError> {
    let invalid = |line: usize, column: &str, rule: String| MeasuresError::Invalid {
        path: path.to_owned(),
        line,
        column: column.to_owned(),
        rule,
    };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| invalid(1, "subject", "the file is empty".into()))?;
    let header: Vec<&str> = header.split('\t').map(str::trim).collect();
    for (index, expected) in COVARIATE_COLUMNS.iter().enumerate() {
        if header.get(index) != Some(expected) {
            return Err(invalid(
                1,
                expected,
                format!("the header must start with {}", COVARIATE_COLUMNS.join("\\t")),
            ));
        }
    }
    let measures: Vec<String> = header[COVARIATE_COLUMNS.len()..].iter().map(|s| s.to_string()).collect();
    if measures.is_empty() {
        return Err(invalid(1, "measures", "no measure column follows subject, age, sex, site".into()));
    }
    if let Some(empty) = measures.iter().find(|m| m.is_empty()) {
        return Err(invalid(1, empty, "a measure column has no name".into()));
    }
    let mut subjects = Vec::new();
    let mut covariates = Vec::new();
    let mut values = vec![Vec::new(); measures.len()];
    for (index, line) in lines {
        let number = index + 1;
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        if fields.len() != header.len() {
            return Err(invalid(
                number,
                "subject",
                format!("{} fields where the header has {}", fields.len(), header.len()),
            ));
        }
        if fields[0].is_empty() {
            return Err(invalid(number, "subject", "the subject is empty".into()));
        }
        let age: f64 =
            fields[1].parse().ok().filter(|a: &f64| a.is_finite() && *a >= 0.0).ok_or_else(|| {
                invalid(number, "age", format!("`{}` is not an age in years ≥ 0", fields[1]))
            })?;
        let sex = match fields[2] {
            "" => None,
            text => Some(
                Sex::parse(text)
                    .ok_or_else(|| invalid(number, "sex", format!("`{text}` is not F, M or empty")))?,
            ),
        };
        let site = (!fields[3].is_empty()).then(|| fields[3].to_owned());
        for (column, field) in fields[COVARIATE_COLUMNS.len()..].iter().enumerate() {
            let value = match *field {
                "" | "NA" | "nan" | "NaN" => f64::NAN,
                text => text.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| {
                    invalid(number, &measures[column], format!("`{text}` is not a number, empty or NA"))
                })?,
            };
            values[column].push(value);
        }
        subjects.push(fields[0].to_owned());
        covariates.push(Covariates { age, sex, site });
    }
    let table = MeasureTable { measures, covariates, values };
    table.validate().map_err(|e| invalid(1, "measures", e.to_string()))?;
    Ok(SubjectMeasures { subjects, table })
}

/// The text of a measures table (values with 6 significant decimals; missing as `NA`).
pub fn format_measures(measures: &SubjectMeasures) -> String {
    let table = &measures.table;
    let mut text = COVARIATE_COLUMNS.join("\t");
    for name in &table.measures {
        text.push('\t');
        text.push_str(name);
    }
    text.push('\n');
    for (row, subject) in measures.subjects.iter().enumerate() {
        let c = &table.covariates[row];
        text.push_str(&format!(
            "{subject}\t{}\t{}\t{}",
            c.age,
            c.sex.map(Sex::code).unwrap_or(""),
            c.site.as_deref().unwrap_or("")
        ));
        for column in &table.values {
            let value = column[row];
            if value.is_finite() {
                text.push_str(&format!("\t{value:.6}"));
            } else {
                text.push_str("\tNA");
            }
        }
        text.push('\n');
    }
    text
}

/// Writes a measures table atomically.
pub fn write_measures(path: &Path, measures: &SubjectMeasures) -> Result<(), MeasuresError> {
    crate::atomic::write_bytes(path, format_measures(measures).as_bytes())
        .map_err(|source| MeasuresError::Io { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "subject\tage\tsex\tsite\ttotal_brain\ticv\n\
        s1\t0.5\tF\tA\t612.5\t700\n\
        s2\t12\tM\t\t1300.25\tNA\n\
        s3\t7.25\t\tB\t1150\t1400.5\n";

    #[test]
    fn reads_what_it_writes() {
        let path = Path::new("measures.tsv");
        let measures = parse_measures(TABLE, path).unwrap();
        assert_eq!(measures.subjects, ["s1", "s2", "s3"]);
        assert_eq!(measures.table.measures, ["total_brain", "icv"]);
        assert_eq!(measures.table.covariates[1].sex, Some(Sex::Male));
        assert_eq!(measures.table.covariates[1].site, None);
        assert!(measures.table.values[1][1].is_nan());
        let again = parse_measures(&format_measures(&measures), path).unwrap();
        assert_eq!(again.subjects, measures.subjects);
        assert_eq!(again.table.values[0], measures.table.values[0]);
        assert_eq!(again.table.covariates, measures.table.covariates);
    }

    #[test]
    fn errors_name_the_file_line_column_and_rule() {
        let path = Path::new("cohort/measures.tsv");
        let cases = [
            ("age\tsubject\tsex\tsite\tx\n", "line 1, column `subject`: the header must start"),
            ("subject\tage\tsex\tsite\n", "no measure column"),
            ("subject\tage\tsex\tsite\tx\ns1\t-2\tF\tA\t1\n", "line 2, column `age`: `-2` is not an age"),
            ("subject\tage\tsex\tsite\tx\ns1\t2\tQ\tA\t1\n", "line 2, column `sex`: `Q` is not F, M"),
            ("subject\tage\tsex\tsite\tx\ns1\t2\tF\tA\tbig\n", "line 2, column `x`: `big` is not a number"),
            (
                "subject\tage\tsex\tsite\tx\ns1\t2\tF\n",
                "line 2, column `subject`: 3 fields where the header has 5",
            ),
            ("subject\tage\tsex\tsite\tx\tx\ns1\t2\tF\tA\t1\t2\n", "`x` appears twice"),
        ];
        for (text, expected) in cases {
            let message = parse_measures(text, path).unwrap_err().to_string();
            assert!(message.starts_with("cohort/measures.tsv"), "{message}");
            assert!(message.contains(expected), "{message} lacks {expected}");
        }
    }
}
