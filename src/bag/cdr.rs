//! A small, bounds-checked reader and writer for OMG CDR (XCDR1) as used by ROS 2 `rmw` layers.
//!
//! A serialized message starts with a 4-byte encapsulation header: `[0, 0]` (big endian) or
//! `[0, 1]` (little endian), then two option bytes. Primitive alignment is measured from the
//! first byte after that header, not from the start of the buffer.

use super::BagError;

/// `builtin_interfaces/msg/Time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Time {
    pub sec: i32,
    pub nanosec: u32,
}

impl Time {
    /// Nanoseconds since the epoch; negative stamps stay negative.
    pub fn as_nanos(&self) -> i64 {
        i64::from(self.sec) * 1_000_000_000 + i64::from(self.nanosec)
    }
}

/// `std_msgs/msg/Header`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    pub stamp: Time,
    pub frame_id: String,
}

const HEADER_LEN: usize = 4;

/// Reads CDR fields in order. Every read checks the remaining length first, so a corrupt
/// length can never make it allocate more than the input holds.
#[derive(Debug, Clone)]
pub struct CdrReader<'a> {
    payload: &'a [u8],
    pos: usize,
    little: bool,
}

impl<'a> CdrReader<'a> {
    /// Parses the encapsulation header and positions the reader at the first field.
    pub fn new(data: &'a [u8]) -> Result<Self, BagError> {
        if data.len() < HEADER_LEN {
            return Err(cdr_err(0, "shorter than the 4-byte encapsulation header"));
        }
        let little = match (data[0], data[1]) {
            (0, 0) => false,
            (0, 1) => true,
            (a, b) => {
                return Err(cdr_err(
                    0,
                    format!("unsupported encapsulation {a:#04x} {b:#04x} (only plain CDR LE/BE)"),
                ))
            }
        };
        Ok(Self {
            payload: &data[HEADER_LEN..],
            pos: 0,
            little,
        })
    }

    pub fn is_little_endian(&self) -> bool {
        self.little
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.payload.len() - self.pos
    }

    /// Offset in the whole message (encapsulation header included), for error messages.
    pub fn offset(&self) -> usize {
        self.pos + HEADER_LEN
    }

    fn err(&self, msg: impl Into<String>) -> BagError {
        cdr_err(self.offset(), msg)
    }

    fn align(&mut self, n: usize) -> Result<(), BagError> {
        let pad = (n - self.pos % n) % n;
        if pad > self.remaining() {
            return Err(self.err(format!(
                "alignment padding of {pad} bytes runs past the end"
            )));
        }
        self.pos += pad;
        Ok(())
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], BagError> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "{what}: needs {n} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.payload[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self, what: &str) -> Result<[u8; N], BagError> {
        self.align(N)?;
        let s = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub fn read_u8(&mut self) -> Result<u8, BagError> {
        Ok(self.take(1, "u8")?[0])
    }

    pub fn read_bool(&mut self) -> Result<bool, BagError> {
        match self.read_u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.err(format!("bool byte {v} is neither 0 nor 1"))),
        }
    }

    pub fn read_u16(&mut self) -> Result<u16, BagError> {
        let b = self.fixed::<2>("u16")?;
        Ok(if self.little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    }

    pub fn read_u32(&mut self) -> Result<u32, BagError> {
        let b = self.fixed::<4>("u32")?;
        Ok(if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    pub fn read_i32(&mut self) -> Result<i32, BagError> {
        Ok(self.read_u32()? as i32)
    }

    pub fn read_u64(&mut self) -> Result<u64, BagError> {
        let b = self.fixed::<8>("u64")?;
        Ok(if self.little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    }

    pub fn read_i64(&mut self) -> Result<i64, BagError> {
        Ok(self.read_u64()? as i64)
    }

    pub fn read_f32(&mut self) -> Result<f32, BagError> {
        Ok(f32::from_bits(self.read_u32()?))
    }

    pub fn read_f64(&mut self) -> Result<f64, BagError> {
        Ok(f64::from_bits(self.read_u64()?))
    }

    /// A sequence length prefix, checked against the bytes left so that a corrupt length
    /// fails here instead of in an allocation. `elem_size` is the minimum encoded size of
    /// one element (1 for strings, whose elements still take at least 4 bytes each, is a safe
    /// lower bound).
    pub fn read_seq_len(&mut self, elem_size: usize) -> Result<usize, BagError> {
        let n = self.read_u32()? as usize;
        let need = n.checked_mul(elem_size.max(1));
        match need {
            Some(need) if need <= self.remaining() => Ok(n),
            _ => Err(self.err(format!(
                "sequence of {n} elements does not fit in the {} bytes left",
                self.remaining()
            ))),
        }
    }

    /// `sequence<uint8>` / `uint8[]`, borrowed from the input.
    pub fn read_bytes(&mut self) -> Result<&'a [u8], BagError> {
        let n = self.read_seq_len(1)?;
        self.take(n, "byte sequence")
    }

    /// A CDR string: u32 length including the terminating NUL, the bytes, then the NUL.
    pub fn read_string(&mut self) -> Result<String, BagError> {
        let n = self.read_seq_len(1)?;
        if n == 0 {
            // Some writers emit a zero length for the empty string; accept it.
            return Ok(String::new());
        }
        let start = self.offset();
        let raw = self.take(n, "string")?;
        let (body, nul) = raw.split_at(n - 1);
        if nul != [0] {
            return Err(cdr_err(start, "string is not NUL-terminated"));
        }
        String::from_utf8(body.to_vec()).map_err(|_| cdr_err(start, "string is not valid UTF-8"))
    }

    pub fn read_time(&mut self) -> Result<Time, BagError> {
        Ok(Time {
            sec: self.read_i32()?,
            nanosec: self.read_u32()?,
        })
    }

    pub fn read_header(&mut self) -> Result<Header, BagError> {
        Ok(Header {
            stamp: self.read_time()?,
            frame_id: self.read_string()?,
        })
    }
}

fn cdr_err(offset: usize, msg: impl Into<String>) -> BagError {
    BagError::Cdr {
        offset,
        msg: msg.into(),
    }
}

/// Builds a CDR message with the same alignment rules as [`CdrReader`].
#[derive(Debug, Clone)]
pub struct CdrWriter {
    buf: Vec<u8>,
    little: bool,
}

impl CdrWriter {
    pub fn new(little_endian: bool) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0, u8::from(little_endian), 0, 0]);
        Self {
            buf,
            little: little_endian,
        }
    }

    fn align(&mut self, n: usize) {
        let pos = self.buf.len() - HEADER_LEN;
        let pad = (n - pos % n) % n;
        self.buf.resize(self.buf.len() + pad, 0);
    }

    pub fn write_u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn write_bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    pub fn write_u16(&mut self, v: u16) {
        self.align(2);
        let b = if self.little {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        };
        self.buf.extend_from_slice(&b);
    }

    pub fn write_u32(&mut self, v: u32) {
        self.align(4);
        let b = if self.little {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        };
        self.buf.extend_from_slice(&b);
    }

    pub fn write_i32(&mut self, v: i32) {
        self.write_u32(v as u32);
    }

    pub fn write_u64(&mut self, v: u64) {
        self.align(8);
        let b = if self.little {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        };
        self.buf.extend_from_slice(&b);
    }

    pub fn write_i64(&mut self, v: i64) {
        self.write_u64(v as u64);
    }

    pub fn write_f32(&mut self, v: f32) {
        self.write_u32(v.to_bits());
    }

    pub fn write_f64(&mut self, v: f64) {
        self.write_u64(v.to_bits());
    }

    /// Writes a sequence length prefix. Lengths beyond `u32::MAX` cannot be encoded in CDR.
    pub fn write_seq_len(&mut self, n: usize) -> Result<(), BagError> {
        let n = u32::try_from(n).map_err(|_| BagError::Cdr {
            offset: self.buf.len(),
            msg: format!("sequence of {n} elements is too long for CDR"),
        })?;
        self.write_u32(n);
        Ok(())
    }

    pub fn write_bytes(&mut self, v: &[u8]) -> Result<(), BagError> {
        self.write_seq_len(v.len())?;
        self.buf.extend_from_slice(v);
        Ok(())
    }

    pub fn write_string(&mut self, s: &str) -> Result<(), BagError> {
        self.write_seq_len(s.len() + 1)?;
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        Ok(())
    }

    pub fn write_time(&mut self, t: Time) {
        self.write_i32(t.sec);
        self.write_u32(t.nanosec);
    }

    pub fn write_header(&mut self, h: &Header) -> Result<(), BagError> {
        self.write_time(h.stamp);
        self.write_string(&h.frame_id)
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_endians_with_alignment() {
        for little in [true, false] {
            let mut w = CdrWriter::new(little);
            w.write_u8(7);
            w.write_u64(0x0102_0304_0506_0708);
            w.write_string("héllo").unwrap();
            w.write_u16(0xBEEF);
            w.write_f64(-1.5);
            w.write_bytes(&[1, 2, 3]).unwrap();
            w.write_i32(-9);
            let buf = w.finish();
            // u8 at 0, pad to 8, u64 at 8..16: alignment counts from after the 4-byte header.
            let u64_at = 4 + 8;
            let expect = if little {
                0x0102_0304_0506_0708u64.to_le_bytes()
            } else {
                0x0102_0304_0506_0708u64.to_be_bytes()
            };
            assert_eq!(&buf[u64_at..u64_at + 8], &expect);
            let mut r = CdrReader::new(&buf).unwrap();
            assert_eq!(r.is_little_endian(), little);
            assert_eq!(r.read_u8().unwrap(), 7);
            assert_eq!(r.read_u64().unwrap(), 0x0102_0304_0506_0708);
            assert_eq!(r.read_string().unwrap(), "héllo");
            assert_eq!(r.read_u16().unwrap(), 0xBEEF);
            assert_eq!(r.read_f64().unwrap(), -1.5);
            assert_eq!(r.read_bytes().unwrap(), &[1, 2, 3]);
            assert_eq!(r.read_i32().unwrap(), -9);
            assert_eq!(r.remaining(), 0);
            assert!(r.read_u8().is_err());
        }
    }

    #[test]
    fn header_layout_matches_hand_encoding() {
        // Hand-built little-endian std_msgs/Header{stamp: {1, 2}, frame_id: "ab"}.
        let raw = [
            0u8, 1, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, b'a', b'b', 0,
        ];
        let mut r = CdrReader::new(&raw).unwrap();
        let h = r.read_header().unwrap();
        assert_eq!(h.stamp, Time { sec: 1, nanosec: 2 });
        assert_eq!(h.frame_id, "ab");
        let mut w = CdrWriter::new(true);
        w.write_header(&h).unwrap();
        assert_eq!(w.finish(), raw);
    }

    #[test]
    fn rejects_bad_lengths_and_headers() {
        assert!(CdrReader::new(&[0, 1, 0]).is_err());
        assert!(CdrReader::new(&[0, 7, 0, 0]).is_err());
        // A huge sequence length must fail before any allocation.
        let raw = [0u8, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 1, 2];
        assert!(CdrReader::new(&raw).unwrap().read_bytes().is_err());
        // Missing NUL terminator.
        let raw = [0u8, 1, 0, 0, 2, 0, 0, 0, b'a', b'b'];
        assert!(CdrReader::new(&raw).unwrap().read_string().is_err());
        // Bad bool.
        let raw = [0u8, 1, 0, 0, 2];
        assert!(CdrReader::new(&raw).unwrap().read_bool().is_err());
    }
}
