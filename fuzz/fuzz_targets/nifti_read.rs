//! Fuzz target: arbitrary bytes (gzipped or not) → NIfTI-1 reader. Any panic is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pedinorm::formats::nifti::read_vector_image_from_bytes(data, std::path::Path::new("fuzz.nii"));
});
