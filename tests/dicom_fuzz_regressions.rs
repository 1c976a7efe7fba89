//! Inputs found by the cargo-fuzz targets (`scripts/fuzz.sh`), kept so that the fixes stay.

/// Asserts that the DICOM fuzz entry point refuses `input` with an error containing `expected`.
fn assert_refused(input: &[u8], expected: &str) {
    let error = pedinorm::formats::dicom::assemble_fuzz_input(input).unwrap_err().to_string();
    assert!(error.contains(expected), "{error}");
}

/// fuzz target `dicom_series`, out of memory (4 GiB resident for a 10 KB input): an element
/// declares a value of 0xFC000000 bytes and dicom-parser zero-filled a buffer of that size
/// before reading it. The declared-length check refuses the object first, naming the element.
#[test]
fn a_declared_length_past_the_end_is_refused_before_allocation() {
    assert_refused(
        include_bytes!("dicom_fuzz_inputs/oom_declared_length.bin"),
        "declares a value of 4227858432 bytes",
    );
}

/// fuzz target `dicom_series`, out of memory (over 2 GiB for a 2.6 KB input): pydicom's JPEG-LS
/// MR with PixelData's tag mutated to (7FE0,4F57) and its VR to an unknown code, so that it reads
/// as a UN of undefined length, which the parser decodes as an implicit VR sequence: the bytes of
/// the first fragment then declare a value of 2.7 GB. The declared-length walk now follows UN
/// sequences in implicit VR, as the parser does, and refuses the object first.
#[test]
fn a_length_inside_an_undefined_length_un_is_checked_before_allocation() {
    assert_refused(
        include_bytes!("dicom_fuzz_inputs/oom_un_sequence_length.bin"),
        "(FFFE,E000) at byte 1540 declares a value of 4430 bytes",
    );
}

/// fuzz target `dicom_series`, out of memory (over 2 GiB for a 393-byte input): a file meta group
/// holding an off-group element (0000,0001) and, after it, an implicit VR transfer syntax. The
/// parser reads the meta group by its group length and the data set as implicit VR; the length
/// walk stopped the meta group at the first off-group tag and walked the data set as explicit
/// VR, so it missed a declared length of 4 GiB. The walk now reads the meta group as the parser
/// does.
#[test]
fn the_meta_group_is_walked_by_its_group_length() {
    assert_refused(
        include_bytes!("dicom_fuzz_inputs/oom_meta_group_length.bin"),
        "(0000,1800) at byte 380 declares a value of 4294967040 bytes",
    );
}

/// fuzz target `dicom_series`, out of memory (over 2 GiB for a 7.6 KB input): a PixelData of
/// defined length 0 followed by an item at the top level of the data set, from which the parser
/// read a value of a declared length the walk did not follow. Decoding now parses the object
/// only up to PixelData and takes PixelData from the bounded walk: what follows it is never
/// parsed, and the empty RLE PixelData is reported.
#[test]
fn nothing_after_pixel_data_is_parsed() {
    assert_refused(
        include_bytes!("dicom_fuzz_inputs/oom_after_pixel_data.bin"),
        "cannot decode PixelData (transfer syntax 1.2.840.10008.1.2.5)",
    );
}
