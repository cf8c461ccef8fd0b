//! The legacy stream's fixed numbers, shared by the reader and the writer without either
//! importing the other.

/// `\x80\x02\x8a\x0a` + the 10-byte magic number: the start of every legacy file.
pub const LEGACY_PREFIX: [u8; 14] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
];
pub(super) const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
pub(super) const LEGACY_PROTOCOL: i64 = 1001;
