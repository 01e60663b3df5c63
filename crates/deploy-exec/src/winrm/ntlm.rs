//! NTLMv2 client messages (MS-NLMP): Negotiate, parse the server's Challenge, Authenticate. No signing or sealing.

use hmac::{Hmac, KeyInit, Mac};
use md4::{Digest as _, Md4};
use md5::Md5;

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
const UNICODE: u32 = 0x0000_0001;
const REQUEST_TARGET: u32 = 0x0000_0004;
const NTLM: u32 = 0x0000_0200;
const ALWAYS_SIGN: u32 = 0x0000_8000;
const EXTENDED_SESSION_SECURITY: u32 = 0x0008_0000;
const TARGET_INFO: u32 = 0x0080_0000;
const NEGOTIATE_128: u32 = 0x2000_0000;
const NEGOTIATE_56: u32 = 0x8000_0000;
const FLAGS: u32 = UNICODE
    | REQUEST_TARGET
    | NTLM
    | ALWAYS_SIGN
    | EXTENDED_SESSION_SECURITY
    | TARGET_INFO
    | NEGOTIATE_128
    | NEGOTIATE_56;
/// AvId of MsvAvTimestamp in the target info.
const AV_TIMESTAMP: u16 = 7;
/// Seconds from 1601-01-01 (FILETIME epoch) to 1970-01-01.
const FILETIME_UNIX_OFFSET: u64 = 11_644_473_600;

/// The server's CHALLENGE_MESSAGE, as far as NTLMv2 needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub server_challenge: [u8; 8],
    pub target_info: Vec<u8>,
    pub flags: u32,
}

/// The NEGOTIATE_MESSAGE (no domain or workstation supplied).
pub fn negotiate() -> Vec<u8> {
    let mut m = Vec::with_capacity(32);
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&FLAGS.to_le_bytes());
    // Empty DomainNameFields and WorkstationFields, pointing at the end of the message.
    for _ in 0..2 {
        m.extend_from_slice(&0u16.to_le_bytes());
        m.extend_from_slice(&0u16.to_le_bytes());
        m.extend_from_slice(&32u32.to_le_bytes());
    }
    m
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses a CHALLENGE_MESSAGE; the error says what is wrong.
pub fn parse_challenge(b: &[u8]) -> Result<Challenge, String> {
    if b.get(..8) != Some(SIGNATURE.as_slice()) {
        return Err("no NTLMSSP signature".to_owned());
    }
    if u32_at(b, 8) != Some(2) {
        return Err("not a CHALLENGE_MESSAGE (type 2)".to_owned());
    }
    let short = || "the message is too short".to_owned();
    let flags = u32_at(b, 20).ok_or_else(short)?;
    let server_challenge: [u8; 8] = b
        .get(24..32)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(short)?;
    let len = usize::from(u16_at(b, 40).ok_or_else(short)?);
    let offset = usize::try_from(u32_at(b, 44).ok_or_else(short)?).map_err(|_| short())?;
    let target_info = b
        .get(offset..offset.saturating_add(len))
        .ok_or_else(|| "the target info lies outside the message".to_owned())?
        .to_vec();
    Ok(Challenge {
        server_challenge,
        target_info,
        flags,
    })
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Md5>::new_from_slice(key) else {
        return [0; 16];
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// NTOWFv2: HMAC-MD5 keyed with MD4(UTF-16LE(password)) over UTF-16LE(UPPER(user) + domain).
pub fn ntowf_v2(user: &str, domain: &str, password: &str) -> [u8; 16] {
    let nt_hash: [u8; 16] = Md4::digest(utf16(password)).into();
    hmac_md5(
        &nt_hash,
        &[&utf16(&format!("{}{domain}", user.to_uppercase()))],
    )
}

/// The MsvAvTimestamp of the target info, if the server sent one.
fn timestamp_of(target_info: &[u8]) -> Option<u64> {
    let mut at = 0;
    // Each AV pair is at least 4 bytes, so this ends within target_info.len() / 4 rounds.
    while at + 4 <= target_info.len() {
        let id = u16_at(target_info, at)?;
        let len = usize::from(u16_at(target_info, at + 2)?);
        let value = target_info.get(at + 4..at + 4 + len)?;
        if id == 0 {
            return None;
        }
        if id == AV_TIMESTAMP && len == 8 {
            return Some(u64::from_le_bytes(value.try_into().ok()?));
        }
        at += 4 + len;
    }
    None
}

/// The current time as a FILETIME (100 ns since 1601).
pub fn filetime_now() -> u64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (unix.as_secs() + FILETIME_UNIX_OFFSET) * 10_000_000 + u64::from(unix.subsec_nanos() / 100)
}

/// `DOMAIN\user` splits; `user@domain` and `user` stay whole with an empty domain.
pub fn split_user(user: &str) -> (&str, &str) {
    match user.split_once('\\') {
        Some((domain, name)) => (domain, name),
        None => ("", user),
    }
}

/// The AUTHENTICATE_MESSAGE answering `challenge` with NTLMv2.
pub fn authenticate(
    challenge: &Challenge,
    user: &str,
    password: &str,
    client_challenge: [u8; 8],
    now: u64,
) -> Vec<u8> {
    let (domain, name) = split_user(user);
    let key = ntowf_v2(name, domain, password);
    let server_timestamp = timestamp_of(&challenge.target_info);
    let timestamp = server_timestamp.unwrap_or(now);
    let mut temp = vec![1u8, 1, 0, 0, 0, 0, 0, 0];
    temp.extend_from_slice(&timestamp.to_le_bytes());
    temp.extend_from_slice(&client_challenge);
    temp.extend_from_slice(&[0; 4]);
    temp.extend_from_slice(&challenge.target_info);
    temp.extend_from_slice(&[0; 4]);
    let proof = hmac_md5(&key, &[&challenge.server_challenge, &temp]);
    let mut nt = proof.to_vec();
    nt.extend_from_slice(&temp);
    // With a server timestamp the LM response must be Z(24); otherwise LMv2.
    let lm = if server_timestamp.is_some() {
        vec![0u8; 24]
    } else {
        let mut lm = hmac_md5(&key, &[&challenge.server_challenge, &client_challenge]).to_vec();
        lm.extend_from_slice(&client_challenge);
        lm
    };
    let fields: [Vec<u8>; 6] = [lm, nt, utf16(domain), utf16(name), Vec::new(), Vec::new()];
    let mut header = Vec::with_capacity(64);
    header.extend_from_slice(SIGNATURE);
    header.extend_from_slice(&3u32.to_le_bytes());
    let mut payload = Vec::new();
    let mut offset: usize = 64;
    for f in &fields {
        let len = u16::try_from(f.len()).unwrap_or(u16::MAX);
        header.extend_from_slice(&len.to_le_bytes());
        header.extend_from_slice(&len.to_le_bytes());
        header.extend_from_slice(&u32::try_from(offset).unwrap_or(u32::MAX).to_le_bytes());
        payload.extend_from_slice(f);
        offset += f.len();
    }
    header.extend_from_slice(&(FLAGS & (challenge.flags | UNICODE)).to_le_bytes());
    header.extend_from_slice(&payload);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntowf_v2_matches_the_ms_nlmp_example() {
        // MS-NLMP 4.2.4.1.1: User "User", domain "Domain", password "Password".
        assert_eq!(
            ntowf_v2("User", "Domain", "Password"),
            [
                0x0c, 0x86, 0x8a, 0x40, 0x3b, 0xfd, 0x7a, 0x93, 0xa3, 0x00, 0x1e, 0xf2, 0x2e, 0xf0,
                0x2e, 0x3f
            ]
        );
    }

    #[test]
    fn bad_challenges_are_errors() {
        assert!(parse_challenge(b"").is_err());
        assert!(parse_challenge(b"NTLMSSP\0\x01\0\0\0").is_err());
        let mut m = b"NTLMSSP\0\x02\0\0\0".to_vec();
        m.resize(48, 0);
        m[40] = 200; // target info longer than the message
        m[44] = 48;
        assert!(parse_challenge(&m).unwrap_err().contains("outside"));
        assert_eq!(split_user("CORP\\deploy"), ("CORP", "deploy"));
        assert_eq!(split_user("deploy@corp"), ("", "deploy@corp"));
    }
}
