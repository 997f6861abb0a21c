//! Devices: a client may acknowledge the position it has processed
//! (`POST /api/events/stream/ack`); what counts as a device id and how many channels one
//! keeps. The Redis side (the device hashes, the index, the report on resume) is in
//! `crate::redis::push_device`.

/// Most channels one device keeps positions for.
pub const MAX_DEVICE_CHANNELS: i64 = 64;

/// Whether `device` is a valid device id: `[A-Za-z0-9_.-]{1,128}`.
pub fn is_valid_device(device: &str) -> bool {
    crate::model::keys::is_valid_name(device)
}
