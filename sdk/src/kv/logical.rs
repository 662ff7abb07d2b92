//! The logical form of a Redis `DUMP` payload, for checksums.
//!
//! `DUMP` bytes are not a stable identity of a value: on Redis 7.0 a set in
//! hashtable encoding dumps its members in hash-table order, which differs
//! after `RESTORE` (measured: strings, lists, hashes and sorted sets in small
//! encodings dump identically after a round trip; sets do not). So checksums
//! are taken over what the value *means*, decoded from the payload: its type
//! and its elements, with unordered collections sorted. Both the host's
//! fingerprint and a plugin's backup manifest go through [`logical_form`], so
//! they agree whatever encoding Redis chose.
//!
//! Decoded: strings (raw, integer, LZF-compressed), lists (quicklist of
//! listpacks or plain nodes), sets (hashtable, intset, listpack), hashes
//! (hashtable, listpack) and sorted sets (skiplist, listpack). Other types
//! (streams, modules, pre-7.0 encodings) are checksummed as their raw
//! serialized body, tagged as opaque.

use std::fmt;

/// Why a payload could not be decoded (it is truncated or corrupt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadError(pub String);

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unreadable DUMP payload: {}", self.0)
    }
}

impl std::error::Error for PayloadError {}

fn bad(what: impl Into<String>) -> PayloadError {
    PayloadError(what.into())
}

/// Largest element count accepted from a payload, so a corrupt length
/// cannot make the decoder allocate without bound (Redis's own limit on
/// collection sizes is 2^32 - 1).
const MAX_ELEMENTS: u64 = u32::MAX as u64;

// RDB object types (Redis `rdb.h`).
const T_STRING: u8 = 0;
const T_SET: u8 = 2;
const T_HASH: u8 = 4;
const T_ZSET_2: u8 = 5;
const T_SET_INTSET: u8 = 11;
const T_HASH_LISTPACK: u8 = 16;
const T_ZSET_LISTPACK: u8 = 17;
const T_LIST_QUICKLIST_2: u8 = 18;
const T_SET_LISTPACK: u8 = 20;

/// The canonical bytes of a `DUMP` payload's value: a type tag, then the
/// elements as length-prefixed byte strings (sets sorted, hashes sorted by
/// field, sorted sets sorted by member with scores as IEEE-754 bits).
pub fn logical_form(payload: &[u8]) -> Result<Vec<u8>, PayloadError> {
    // A payload ends with a 2-byte RDB version and an 8-byte CRC64.
    let body = payload
        .len()
        .checked_sub(10)
        .filter(|n| *n > 0)
        .map(|n| &payload[..n])
        .ok_or_else(|| bad(format!("{} bytes is too short", payload.len())))?;
    let mut r = Reader { data: body, pos: 1 };
    let mut out = Vec::new();
    match body[0] {
        T_STRING => {
            out.push(b's');
            put(&mut out, &r.string()?);
        }
        T_LIST_QUICKLIST_2 => {
            out.push(b'l');
            let nodes = r.len()?;
            for _ in 0..nodes {
                let container = r.len()?;
                let node = r.string()?;
                match container {
                    // A plain node holds one large element as it is.
                    1 => put(&mut out, &node),
                    2 => {
                        for element in listpack(&node)? {
                            put(&mut out, &element);
                        }
                    }
                    other => return Err(bad(format!("unknown quicklist container {other}"))),
                }
            }
        }
        T_SET => {
            let n = r.len()?;
            let mut members = (0..n).map(|_| r.string()).collect::<Result<Vec<_>, _>>()?;
            set(&mut out, &mut members);
        }
        T_SET_INTSET => set(&mut out, &mut intset(&r.string()?)?),
        T_SET_LISTPACK => set(&mut out, &mut listpack(&r.string()?)?),
        T_HASH => {
            let n = r.len()?;
            let mut pairs = (0..n)
                .map(|_| Ok((r.string()?, r.string()?)))
                .collect::<Result<Vec<_>, PayloadError>>()?;
            hash(&mut out, &mut pairs);
        }
        T_HASH_LISTPACK => {
            let mut pairs = pairs(listpack(&r.string()?)?)?;
            hash(&mut out, &mut pairs);
        }
        T_ZSET_2 => {
            let n = r.len()?;
            let mut members = (0..n)
                .map(|_| Ok((r.string()?, f64::from_le_bytes(r.take_array()?))))
                .collect::<Result<Vec<_>, PayloadError>>()?;
            zset(&mut out, &mut members);
        }
        T_ZSET_LISTPACK => {
            let mut members = pairs(listpack(&r.string()?)?)?
                .into_iter()
                .map(|(member, score)| {
                    let text = std::str::from_utf8(&score)
                        .map_err(|_| bad("sorted-set score is not text"))?;
                    let score: f64 = text
                        .parse()
                        .map_err(|_| bad(format!("sorted-set score `{text}`")))?;
                    Ok((member, score))
                })
                .collect::<Result<Vec<_>, PayloadError>>()?;
            zset(&mut out, &mut members);
        }
        other => {
            // Streams and module types: their serialization is their identity.
            out.push(b'o');
            out.push(other);
            put(&mut out, &body[1..]);
        }
    }
    Ok(out)
}

fn put(out: &mut Vec<u8>, element: &[u8]) {
    out.extend_from_slice(&(element.len() as u64).to_le_bytes());
    out.extend_from_slice(element);
}

fn set(out: &mut Vec<u8>, members: &mut [Vec<u8>]) {
    members.sort_unstable();
    out.push(b'S');
    for m in members.iter() {
        put(out, m);
    }
}

fn hash(out: &mut Vec<u8>, pairs: &mut [Pair]) {
    pairs.sort_unstable();
    out.push(b'h');
    for (field, value) in pairs.iter() {
        put(out, field);
        put(out, value);
    }
}

fn zset(out: &mut Vec<u8>, members: &mut [(Vec<u8>, f64)]) {
    members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out.push(b'z');
    for (member, score) in members.iter() {
        put(out, member);
        // -0.0 and 0.0 are the same score to Redis.
        let score = if *score == 0.0 { 0.0f64 } else { *score };
        out.extend_from_slice(&score.to_bits().to_le_bytes());
    }
}

/// A field and its value, or a member and its score.
type Pair = (Vec<u8>, Vec<u8>);

fn pairs(elements: Vec<Vec<u8>>) -> Result<Vec<Pair>, PayloadError> {
    if !elements.len().is_multiple_of(2) {
        return Err(bad("odd number of elements in a paired listpack"));
    }
    let mut it = elements.into_iter();
    let mut out = Vec::new();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push((a, b));
    }
    Ok(out)
}

/// A cursor over RDB-serialized bytes.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PayloadError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or_else(|| bad(format!("truncated at byte {}", self.pos)))?;
        let slice = &self.data[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], PayloadError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn byte(&mut self) -> Result<u8, PayloadError> {
        Ok(self.take(1)?[0])
    }

    /// A length, or a special string encoding (`Err(Ok(kind))`).
    fn len_or_special(&mut self) -> Result<Result<u64, u8>, PayloadError> {
        let first = self.byte()?;
        Ok(match first >> 6 {
            0 => Ok(u64::from(first & 0x3f)),
            1 => Ok((u64::from(first & 0x3f) << 8) | u64::from(self.byte()?)),
            2 => match first {
                0x80 => Ok(u64::from(u32::from_be_bytes(self.take_array()?))),
                0x81 => Ok(u64::from_be_bytes(self.take_array()?)),
                other => return Err(bad(format!("length encoding {other:#x}"))),
            },
            _ => Err(first & 0x3f),
        })
    }

    fn len(&mut self) -> Result<u64, PayloadError> {
        match self.len_or_special()? {
            Ok(n) if n <= MAX_ELEMENTS => Ok(n),
            Ok(n) => Err(bad(format!("length {n} is implausible"))),
            Err(kind) => Err(bad(format!(
                "special encoding {kind} where a length belongs"
            ))),
        }
    }

    fn string(&mut self) -> Result<Vec<u8>, PayloadError> {
        match self.len_or_special()? {
            Ok(n) => Ok(self
                .take(usize::try_from(n).map_err(|_| bad("string too long"))?)?
                .to_vec()),
            Err(0) => Ok((self.byte()? as i8).to_string().into_bytes()),
            Err(1) => Ok(i16::from_le_bytes(self.take_array()?)
                .to_string()
                .into_bytes()),
            Err(2) => Ok(i32::from_le_bytes(self.take_array()?)
                .to_string()
                .into_bytes()),
            Err(3) => {
                let compressed = self.len()? as usize;
                let len = self.len()? as usize;
                let data = self.take(compressed)?;
                lzf_decompress(data, len)
            }
            Err(other) => Err(bad(format!("string encoding {other}"))),
        }
    }
}

/// LZF decompression (liblzf's format, as Redis writes compressed strings).
fn lzf_decompress(input: &[u8], len: usize) -> Result<Vec<u8>, PayloadError> {
    let mut out = Vec::with_capacity(len.min(input.len().saturating_mul(256)));
    let mut i = 0;
    let truncated = || bad("truncated LZF data");
    while i < input.len() {
        let ctrl = usize::from(input[i]);
        i += 1;
        if ctrl < 32 {
            let run = input.get(i..i + ctrl + 1).ok_or_else(truncated)?;
            out.extend_from_slice(run);
            i += ctrl + 1;
        } else {
            let mut n = ctrl >> 5;
            if n == 7 {
                n += usize::from(*input.get(i).ok_or_else(truncated)?);
                i += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + usize::from(*input.get(i).ok_or_else(truncated)?) + 1;
            i += 1;
            let start = out
                .len()
                .checked_sub(back)
                .ok_or_else(|| bad("LZF back-reference before the start"))?;
            // Byte by byte: the copy may overlap what it produces.
            for k in 0..n + 2 {
                let b = out[start + k];
                out.push(b);
            }
        }
        if out.len() > len {
            return Err(bad("LZF data longer than declared"));
        }
    }
    if out.len() != len {
        return Err(bad(format!(
            "LZF data is {} bytes, declared {len}",
            out.len()
        )));
    }
    Ok(out)
}

/// The elements of a listpack, integers as their decimal text.
fn listpack(lp: &[u8]) -> Result<Vec<Vec<u8>>, PayloadError> {
    let mut r = Reader { data: lp, pos: 6 };
    if lp.len() < 7 {
        return Err(bad("listpack too short"));
    }
    let mut out = Vec::new();
    loop {
        let start = r.pos;
        let b = r.byte()?;
        let element = if b == 0xff {
            break;
        } else if b & 0x80 == 0 {
            int(i64::from(b & 0x7f))
        } else if b & 0xc0 == 0x80 {
            r.take(usize::from(b & 0x3f))?.to_vec()
        } else if b & 0xe0 == 0xc0 {
            let v = (i64::from(b & 0x1f) << 8) | i64::from(r.byte()?);
            int(sign(v, 13))
        } else if b & 0xf0 == 0xe0 {
            let n = (usize::from(b & 0x0f) << 8) | usize::from(r.byte()?);
            r.take(n)?.to_vec()
        } else {
            match b {
                0xf0 => {
                    let n = u32::from_le_bytes(r.take_array()?) as usize;
                    r.take(n)?.to_vec()
                }
                0xf1 => int(i64::from(i16::from_le_bytes(r.take_array()?))),
                0xf2 => {
                    let [a, b2, c] = r.take_array()?;
                    int(sign(i64::from(u32::from_le_bytes([a, b2, c, 0])), 24))
                }
                0xf3 => int(i64::from(i32::from_le_bytes(r.take_array()?))),
                0xf4 => int(i64::from_le_bytes(r.take_array()?)),
                other => return Err(bad(format!("listpack entry encoding {other:#x}"))),
            }
        };
        // Skip the entry's back-length: 1 to 5 bytes, by the entry's size.
        let size = r.pos - start;
        let backlen = match size {
            0..=127 => 1,
            128..=16_382 => 2,
            16_383..=2_097_150 => 3,
            2_097_151..=268_435_454 => 4,
            _ => 5,
        };
        r.take(backlen)?;
        out.push(element);
    }
    Ok(out)
}

fn sign(v: i64, bits: u32) -> i64 {
    if v >= 1 << (bits - 1) {
        v - (1 << bits)
    } else {
        v
    }
}

fn int(v: i64) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// The members of an intset, as decimal text.
fn intset(bytes: &[u8]) -> Result<Vec<Vec<u8>>, PayloadError> {
    let mut r = Reader {
        data: bytes,
        pos: 0,
    };
    let width = u32::from_le_bytes(r.take_array()?) as usize;
    let n = u32::from_le_bytes(r.take_array()?) as usize;
    if !matches!(width, 2 | 4 | 8) {
        return Err(bad(format!("intset width {width}")));
    }
    (0..n)
        .map(|_| {
            let raw = r.take(width)?;
            Ok(int(match width {
                2 => i64::from(i16::from_le_bytes(raw.try_into().expect("2 bytes"))),
                4 => i64::from(i32::from_le_bytes(raw.try_into().expect("4 bytes"))),
                _ => i64::from_le_bytes(raw.try_into().expect("8 bytes")),
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload as Redis would frame it: body, RDB version, CRC (unchecked).
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut p = body.to_vec();
        p.extend_from_slice(&[10, 0]);
        p.extend_from_slice(&[0; 8]);
        p
    }

    #[test]
    fn strings_in_every_encoding_read_as_text() {
        // Raw, int8, int16, int32.
        let raw = logical_form(&framed(&[0, 5, b'h', b'e', b'l', b'l', b'o'])).unwrap();
        let mut want = vec![b's'];
        put(&mut want, b"hello");
        assert_eq!(raw, want);
        let as_int = logical_form(&framed(&[0, 0xc1, 0x39, 0x30])).unwrap();
        let mut want = vec![b's'];
        put(&mut want, b"12345");
        assert_eq!(as_int, want);
        assert_eq!(
            logical_form(&framed(&[0, 0xc0, 0xff])).unwrap()[9..],
            *b"-1"
        );
    }

    #[test]
    fn lzf_round_trips_a_repetition() {
        // "aaaaaaaaaa": literal 'a', then a back-reference of 9 at distance 1.
        let data = [0x00, b'a', 0xe0, 0x00, 0x00];
        assert_eq!(lzf_decompress(&data, 10).unwrap(), b"aaaaaaaaaa");
        assert!(lzf_decompress(&data, 11).is_err());
        assert!(lzf_decompress(&[0x00, b'a', 0x20, 0x05], 4).is_err());
    }

    #[test]
    fn sets_do_not_depend_on_member_order() {
        let a = logical_form(&framed(&[2, 2, 1, b'a', 1, b'b'])).unwrap();
        let b = logical_form(&framed(&[2, 2, 1, b'b', 1, b'a'])).unwrap();
        assert_eq!(a, b);
        let c = logical_form(&framed(&[2, 2, 1, b'b', 1, b'c'])).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn truncated_payloads_are_errors_not_panics() {
        for body in [&[0u8, 5, b'h'][..], &[2, 0x81], &[18, 1, 2, 3, 0, 0]] {
            assert!(logical_form(&framed(body)).is_err(), "{body:?}");
        }
        assert!(logical_form(&[1, 2, 3]).is_err());
    }

    #[test]
    fn listpack_integers_and_strings() {
        // total bytes (ignored), count (ignored), then entries + backlens.
        let mut lp = vec![0, 0, 0, 0, 3, 0];
        lp.extend_from_slice(&[0x05, 1]); // 7-bit uint 5
        lp.extend_from_slice(&[0x82, b'h', b'i', 3]); // 6-bit string "hi"
        lp.extend_from_slice(&[0xdf, 0xff, 2]); // 13-bit int -1
        lp.push(0xff);
        assert_eq!(
            listpack(&lp).unwrap(),
            vec![b"5".to_vec(), b"hi".to_vec(), b"-1".to_vec()]
        );
    }
}
