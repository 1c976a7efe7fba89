//! Fuzz target: arbitrary bytes → affine transform reader (ITK text, or MATLAB v4 `.mat` when
//! the first byte is odd). Any panic is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, content)) = data.split_first() else { return };
    let name = if selector % 2 == 1 { "fuzz.mat" } else { "fuzz.txt" };
    let _ = pedinorm::formats::transform::parse_affine(std::path::Path::new(name), content);
});
