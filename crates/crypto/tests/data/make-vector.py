#!/usr/bin/env python3
"""Builds sigstruct-vector.hex: a SIGSTRUCT signed with test-key.pem, independently of
sgxemu-crypto (layout from architecture spec §1.10; signature by the openssl CLI;
Q1/Q2 with Python integers). Run from this folder: python3 make-vector.py"""
import hashlib, struct, subprocess

def field_bytes():
    header = bytes.fromhex("06000000e10000000000010000000000")
    header2 = bytes.fromhex("01010000600000006000000001000000")
    first = header + struct.pack("<II", 0x8086, 0x20240615) + header2 + struct.pack("<I", 0x12345678) + bytes(84)
    assert len(first) == 128
    attributes = struct.pack("<QQ", 0x4, 0x3)
    attributemask = struct.pack("<QQ", 0xFFFFFFFFFFFFFFFD, 0xFFFFFFFFFFFFFFFF)
    enclavehash = bytes.fromhex("1f2cf80bd03ffd8bfac33f7cba128aff511c3af666b93bb66e7ef718418bdade")
    second = (struct.pack("<II", 0x1, 0xFFFFFFFF) + bytes([0, 0]) + bytes(2) + bytes(16)
              + attributes + attributemask + enclavehash + bytes(16) + bytes(16)
              + struct.pack("<HH", 0x1234, 0x0042))
    assert len(second) == 128
    return first, second

first, second = field_bytes()
msg = first + second
sig_be = subprocess.run(["openssl", "dgst", "-sha256", "-sign", "test-key.pem"],
                        input=msg, capture_output=True, check=True).stdout
assert len(sig_be) == 384
mod_hex = subprocess.run(["openssl", "rsa", "-in", "test-key.pem", "-noout", "-modulus"],
                         capture_output=True, check=True, text=True).stdout.strip().split("=")[1]
n = int(mod_hex, 16)
s = int.from_bytes(sig_be, "big")
assert n.bit_length() == 3072 and s < n
q1 = s * s // n
q2 = (s ** 3 - q1 * s * n) // n
em = pow(s, 3, n).to_bytes(384, "big")
prefix = b"\x00\x01" + b"\xff" * 330 + b"\x00" + bytes.fromhex("3031300d060960864801650304020105000420")
assert em == prefix + hashlib.sha256(msg).digest()

le = lambda x: x.to_bytes(384, "little")
full = first + le(n) + struct.pack("<I", 3) + le(s) + second + bytes(12) + le(q1) + le(q2)
assert len(full) == 1808
with open("sigstruct-vector.hex", "w") as f:
    for i in range(0, len(full), 32):
        f.write(full[i:i + 32].hex() + "\n")
print("mrsigner", hashlib.sha256(le(n)).hexdigest())
