//! Fuzz target: arbitrary bytes → DICOM objects → series assembly. A panic that escapes the
//! public API, an abort or an out-of-memory is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // The loader turns panics inside third-party decoders into errors (catch_unwind);
        // libFuzzer's default hook would abort on those before they are caught. A panic that
        // escapes the API still aborts: libfuzzer-sys checks the closure with catch_unwind.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
        let _ = pedinorm::formats::dicom::assemble_fuzz_input(data);
    }
);
