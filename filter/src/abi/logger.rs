//! The `log` backend: records go to `proxy_log`. The runtime keeps `log::max_level` at the
//! host's level, so a disabled record is never formatted.

use super::host::AbiHost;
use crate::runtime::Quiet;

pub struct ProxyLogger;

pub static LOGGER: ProxyLogger = ProxyLogger;

impl log::Log for ProxyLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            AbiHost.log(record.level(), &record.args().to_string());
        }
    }

    fn flush(&self) {}
}
