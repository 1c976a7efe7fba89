//! Inputs found by the cargo-fuzz targets (`scripts/fuzz.sh`), kept so that the fixes stay.

/// fuzz target `dicom_series`, out of memory (4 GiB resident for a 10 KB input): an element
/// declares a value of 0xFC000000 bytes and dicom-parser zero-filled a buffer of that size
/// before reading it. The declared-length check refuses the object first, naming the element.
#[test]
fn a_declared_length_past_the_end_is_refused_before_allocation() {
    let input = include_bytes!("dicom_fuzz_inputs/oom_declared_length.bin");
    let error = pedinorm::dicom::assemble_fuzz_input(input).unwrap_err().to_string();
    assert!(error.contains("declares a value of 4227858432 bytes"), "{error}");
}
