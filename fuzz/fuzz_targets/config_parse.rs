#![no_main]
//! See `tomoda_promote_fuzz::check_config` for the property.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tomoda_promote_fuzz::check_config(data));
