//! The configuration loader (`Config::from_toml`, what `Config::load` runs on the file's
//! text): an operator's hand-edited TOML, often written under stress. It reads the files the
//! text names (password, secret and CA files, the identity key) but writes none.
//!
//! Checked: a refusal is never empty, and each of its problems says what is wrong;
//! an accepted config passes its own validation again; nothing panics, hangs or allocates
//! without bound whatever path the text names.
#![no_main]

use archipel_gateway::config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text) {
        Ok(config) => {
            assert!(
                config.validate().is_ok(),
                "a loaded config fails validation"
            );
            let _ = config.endpoints().count();
            let _ = config.channel_table();
        }
        Err(ConfigError::Invalid { problems }) => {
            assert!(!problems.is_empty(), "refused with no problem named");
            for p in &problems {
                assert!(!p.message.is_empty(), "a problem with no message: {p:?}");
            }
        }
        Err(_) => {}
    }
});
