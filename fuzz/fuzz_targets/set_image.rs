#![no_main]
//! See `tomoda_promote_fuzz::check_set_image` for the property.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tomoda_promote_fuzz::check_set_image(data));
