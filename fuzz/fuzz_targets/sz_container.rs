//! The `.sz` reader of `surprisal decompress` (`Container::from_bytes`): any bytes give a
//! container or an error, never a panic or an allocation larger than the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = surprisal_compress::Container::from_bytes(data) {
        // a container that parses writes back to the same bytes
        assert_eq!(c.to_bytes(), data);
    }
});
