//! Key and value encodings.
//!
//! Keys are order-preserving: for any two keys of one type, `a < b` exactly when
//! `encode(a) < encode(b)` byte-wise, so that range and prefix scans in the engine follow the
//! natural order of the typed key. Integers are big-endian (signed ones with the sign bit flipped);
//! strings and byte strings escape `0x00` as `0x00 0xFF` and end with `0x00 0x01`, which sorts a
//! string before all of its extensions; tuples concatenate their parts, so every complete leading
//! part of a tuple is a byte prefix of the whole key.
//!
//! Values are JSON for records (readable with any RocksDB tool, tolerant of added fields) and
//! plain bytes for the few hot scalars.

use ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedServerName, OwnedUserId};

/// Why a key or value could not be decoded; the caller adds the table name and the raw bytes.
#[derive(Debug)]
pub struct DecodeError(pub String);

impl DecodeError {
    fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// An order-preserving key encoding.
pub trait KeyCodec: Sized {
    fn encode_key(&self, out: &mut Vec<u8>);
    /// Decodes one key from the front of `input`, advancing it.
    fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError>;

    fn to_key_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        self.encode_key(&mut out);
        out
    }

    fn from_key_bytes(mut bytes: &[u8]) -> Result<Self, DecodeError> {
        let key = Self::decode_key(&mut bytes)?;
        if bytes.is_empty() {
            Ok(key)
        } else {
            Err(DecodeError::new(format!("{} trailing bytes", bytes.len())))
        }
    }
}

/// Marks `P` as a leading part of the key type `Self`, so a scan over `P` is type-checked.
pub trait HasPrefix<P: KeyCodec>: KeyCodec {}

impl<A: KeyCodec, B: KeyCodec> HasPrefix<A> for (A, B) {}
impl<A: KeyCodec, B: KeyCodec, C: KeyCodec> HasPrefix<A> for (A, B, C) {}
impl<A: KeyCodec, B: KeyCodec, C: KeyCodec> HasPrefix<(A, B)> for (A, B, C) {}
impl<A: KeyCodec, B: KeyCodec, C: KeyCodec, D: KeyCodec> HasPrefix<A> for (A, B, C, D) {}
impl<A: KeyCodec, B: KeyCodec, C: KeyCodec, D: KeyCodec> HasPrefix<(A, B)> for (A, B, C, D) {}
impl<A: KeyCodec, B: KeyCodec, C: KeyCodec, D: KeyCodec> HasPrefix<(A, B, C)> for (A, B, C, D) {}

fn take<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    let Some((head, rest)) = input.split_first_chunk::<N>() else {
        return Err(DecodeError::new(format!("expected {N} bytes, found {}", input.len())));
    };
    *input = rest;
    Ok(*head)
}

macro_rules! unsigned_key {
    ($($t:ty),*) => {$(
        impl KeyCodec for $t {
            fn encode_key(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
                Ok(<$t>::from_be_bytes(take(input)?))
            }
        }
    )*};
}
unsigned_key!(u8, u16, u32, u64);

impl KeyCodec for i64 {
    fn encode_key(&self, out: &mut Vec<u8>) {
        // Flipping the sign bit maps i64 order onto u64 order.
        out.extend_from_slice(&((*self as u64) ^ (1 << 63)).to_be_bytes());
    }
    fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok((u64::from_be_bytes(take(input)?) ^ (1 << 63)) as i64)
    }
}

impl KeyCodec for bool {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
        match take::<1>(input)? {
            [0] => Ok(false),
            [1] => Ok(true),
            [b] => Err(DecodeError::new(format!("bool byte {b}"))),
        }
    }
}

impl KeyCodec for () {
    fn encode_key(&self, _out: &mut Vec<u8>) {}
    fn decode_key(_input: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(())
    }
}

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 2);
    for &b in bytes {
        out.push(b);
        if b == ESCAPE {
            out.push(ESCAPED_ZERO);
        }
    }
    out.extend_from_slice(&[ESCAPE, TERMINATOR]);
}

fn decode_bytes(input: &mut &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b != ESCAPE {
            out.push(b);
            i += 1;
            continue;
        }
        match input.get(i + 1) {
            Some(&ESCAPED_ZERO) => {
                out.push(0);
                i += 2;
            }
            Some(&TERMINATOR) => {
                *input = &input[i + 2..];
                return Ok(out);
            }
            _ => return Err(DecodeError::new("bad escape in byte string")),
        }
    }
    Err(DecodeError::new("unterminated byte string"))
}

impl KeyCodec for Vec<u8> {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_bytes(self, out);
    }
    fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_bytes(input)
    }
}

impl KeyCodec for String {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_bytes(self.as_bytes(), out);
    }
    fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
        String::from_utf8(decode_bytes(input)?).map_err(|e| DecodeError::new(e.to_string()))
    }
}

/// Matrix identifiers are stored as their string form; they order as strings do.
macro_rules! id_key {
    ($($t:ty),*) => {$(
        impl KeyCodec for $t {
            fn encode_key(&self, out: &mut Vec<u8>) {
                encode_bytes(self.as_str().as_bytes(), out);
            }
            fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
                let s = String::decode_key(input)?;
                <$t>::try_from(s).map_err(|e| DecodeError::new(e.to_string()))
            }
        }
        impl ValueCodec for $t {
            fn encode_value(&self) -> Result<Vec<u8>, String> {
                Ok(self.as_str().as_bytes().to_vec())
            }
            fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
                let s = std::str::from_utf8(bytes).map_err(|e| DecodeError::new(e.to_string()))?;
                <$t>::try_from(s).map_err(|e| DecodeError::new(e.to_string()))
            }
        }
    )*};
}
id_key!(OwnedUserId, OwnedRoomId, OwnedEventId, OwnedRoomAliasId, OwnedServerName);

impl KeyCodec for OwnedDeviceId {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_bytes(self.as_str().as_bytes(), out);
    }
    fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
        // Device IDs are opaque strings; every string is valid.
        Ok(OwnedDeviceId::from(String::decode_key(input)?))
    }
}

macro_rules! tuple_key {
    ($($name:ident),+) => {
        impl<$($name: KeyCodec),+> KeyCodec for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode_key(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode_key(out);)+
            }
            fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
                Ok(($($name::decode_key(input)?,)+))
            }
        }
    };
}
tuple_key!(A, B);
tuple_key!(A, B, C);
tuple_key!(A, B, C, D);

/// A value encoding. Records use [`json_value!`]; scalars have compact forms.
pub trait ValueCodec: Sized {
    fn encode_value(&self) -> Result<Vec<u8>, String>;
    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// Implements [`ValueCodec`] as JSON for record types.
#[macro_export]
macro_rules! json_value {
    ($($t:ty),* $(,)?) => {$(
        impl $crate::codec::ValueCodec for $t {
            fn encode_value(&self) -> Result<Vec<u8>, String> {
                serde_json::to_vec(self).map_err(|e| e.to_string())
            }
            fn decode_value(bytes: &[u8]) -> Result<Self, $crate::codec::DecodeError> {
                serde_json::from_slice(bytes).map_err(|e| $crate::codec::DecodeError(e.to_string()))
            }
        }
    )*};
}

json_value!(serde_json::Value);

impl ValueCodec for () {
    fn encode_value(&self) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }
    fn decode_value(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(())
    }
}

impl ValueCodec for u64 {
    fn encode_value(&self) -> Result<Vec<u8>, String> {
        Ok(self.to_be_bytes().to_vec())
    }
    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        let arr: [u8; 8] = bytes.try_into().map_err(|_| DecodeError::new("u64 needs 8 bytes"))?;
        Ok(u64::from_be_bytes(arr))
    }
}

impl ValueCodec for String {
    fn encode_value(&self) -> Result<Vec<u8>, String> {
        Ok(self.as_bytes().to_vec())
    }
    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| DecodeError::new(e.to_string()))
    }
}

/// A membership as events spell it (`join`, `leave`...), the bytes of its string.
impl ValueCodec for ruma::events::room::member::MembershipState {
    fn encode_value(&self) -> Result<Vec<u8>, String> {
        Ok(self.as_str().as_bytes().to_vec())
    }
    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(std::str::from_utf8(bytes).map_err(|e| DecodeError::new(e.to_string()))?.into())
    }
}

impl ValueCodec for Vec<u8> {
    fn encode_value(&self) -> Result<Vec<u8>, String> {
        Ok(self.clone())
    }
    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(bytes.to_vec())
    }
}

impl ValueCodec for OwnedDeviceId {
    fn encode_value(&self) -> Result<Vec<u8>, String> {
        Ok(self.as_str().as_bytes().to_vec())
    }
    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        String::decode_value(bytes).map(OwnedDeviceId::from)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn enc<K: KeyCodec>(k: &K) -> Vec<u8> {
        k.to_key_bytes()
    }

    proptest! {
        #[test]
        fn u64_order(a: u64, b: u64) {
            prop_assert_eq!(a.cmp(&b), enc(&a).cmp(&enc(&b)));
            prop_assert_eq!(u64::from_key_bytes(&enc(&a)).unwrap(), a);
        }

        #[test]
        fn i64_order(a: i64, b: i64) {
            prop_assert_eq!(a.cmp(&b), enc(&a).cmp(&enc(&b)));
            prop_assert_eq!(i64::from_key_bytes(&enc(&a)).unwrap(), a);
        }

        #[test]
        fn string_order_and_round_trip(a in "\\PC{0,12}|[\\x00a]{0,4}", b in "\\PC{0,12}|[\\x00a]{0,4}") {
            prop_assert_eq!(a.cmp(&b), enc(&a).cmp(&enc(&b)));
            prop_assert_eq!(String::from_key_bytes(&enc(&a)).unwrap(), a);
        }

        #[test]
        fn bytes_order(a in proptest::collection::vec(any::<u8>(), 0..10),
                       b in proptest::collection::vec(any::<u8>(), 0..10)) {
            prop_assert_eq!(a.cmp(&b), enc(&a).cmp(&enc(&b)));
            prop_assert_eq!(Vec::<u8>::from_key_bytes(&enc(&a)).unwrap(), a);
        }

        #[test]
        fn tuple_order(a in ("[a-c\\x00]{0,3}", any::<u64>(), "[ab]{0,2}"),
                       b in ("[a-c\\x00]{0,3}", any::<u64>(), "[ab]{0,2}")) {
            prop_assert_eq!(a.cmp(&b), enc(&a).cmp(&enc(&b)));
            prop_assert_eq!(<(String, u64, String)>::from_key_bytes(&enc(&a)).unwrap(), a);
        }

        #[test]
        fn tuple_prefix_is_byte_prefix(a in "[a-c\\x00]{0,4}", n: u64) {
            let whole = enc(&(a.clone(), n));
            prop_assert!(whole.starts_with(&enc(&a)));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            let _ = <(String, u64)>::from_key_bytes(&bytes);
            let _ = <(OwnedUserId, OwnedDeviceId)>::from_key_bytes(&bytes);
        }
    }

    #[test]
    fn string_is_before_its_extensions() {
        assert!(enc(&"a".to_owned()) < enc(&"a\0".to_owned()));
        assert!(enc(&"a\0".to_owned()) < enc(&"a\x01".to_owned()));
        assert!(enc(&("a".to_owned(), u64::MAX)) < enc(&("ab".to_owned(), 0u64)));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = enc(&7u64);
        bytes.push(0);
        assert!(u64::from_key_bytes(&bytes).is_err());
    }

    #[test]
    fn ids_round_trip() {
        let user: OwnedUserId = "@alice:example.org".try_into().unwrap();
        let device = OwnedDeviceId::from("ABCDEF");
        let key = (user.clone(), device.clone());
        assert_eq!(<(OwnedUserId, OwnedDeviceId)>::from_key_bytes(&enc(&key)).unwrap(), key);
        assert_eq!(OwnedUserId::decode_value(&user.encode_value().unwrap()).unwrap(), user);
    }
}
