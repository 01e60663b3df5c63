//! Lowercase hexadecimal of bytes: the one spelling of digests, signatures, keys and ids that this workspace writes.

/// `bytes` as lowercase hex, two characters per byte.
pub fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::lower_hex;

    #[test]
    fn every_byte_is_two_lowercase_digits() {
        assert_eq!(lower_hex(&[]), "");
        assert_eq!(lower_hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        let all: Vec<u8> = (0..=255).collect();
        let text = lower_hex(&all);
        assert_eq!(text.len(), 512);
        assert!(
            text.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            assert_eq!(
                u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap() as usize,
                i
            );
        }
    }
}
