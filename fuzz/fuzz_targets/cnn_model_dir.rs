#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| neka_testing::fuzzing::cnn_model_dir(data));
