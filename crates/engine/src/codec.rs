//! Little-endian binary encoding shared by the log and the snapshot files.

use serde_json::{Map, Value};

use crate::id::PointId;

#[derive(Default)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.buf.extend_from_slice(b);
    }
    pub fn f32s(&mut self, v: &[f32]) {
        self.u32(v.len() as u32);
        self.buf.reserve(v.len() * 4);
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
    }
    pub fn id(&mut self, id: &PointId) {
        match id {
            PointId::Num(n) => {
                self.u8(0);
                self.u64(*n);
            }
            PointId::Uuid(u) => {
                self.u8(1);
                self.buf.extend_from_slice(u.as_bytes());
            }
        }
    }
    /// A payload as its JSON text; length 0 stands for "no payload".
    pub fn payload(&mut self, p: Option<&Map<String, Value>>) {
        match p {
            Some(m) => self.bytes(&serde_json::to_vec(m).expect("a JSON map always serializes")),
            None => self.u32(0),
        }
    }
}

/// A reader that answers `None` on any short or malformed input, so that a
/// torn record is told apart from a good one without panicking.
pub struct Dec<'a> {
    buf: &'a [u8],
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf }
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Some(a)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn f32s(&mut self) -> Option<Vec<f32>> {
        let n = self.u32()? as usize;
        let raw = self.take(n.checked_mul(4)?)?;
        Some(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        )
    }
    pub fn id(&mut self) -> Option<PointId> {
        match self.u8()? {
            0 => self.u64().map(PointId::Num),
            1 => {
                let raw: [u8; 16] = self.take(16)?.try_into().ok()?;
                Some(PointId::Uuid(uuid::Uuid::from_bytes(raw)))
            }
            _ => None,
        }
    }
    /// `Some(None)` for "no payload", `None` for malformed input.
    pub fn payload(&mut self) -> Option<Option<Map<String, Value>>> {
        let raw = self.bytes()?;
        if raw.is_empty() {
            return Some(None);
        }
        match serde_json::from_slice::<Value>(raw).ok()? {
            Value::Object(m) => Some(Some(m)),
            _ => None,
        }
    }
}
