"""Keys and tokens made by a standard JWT library (PyJWT, with `cryptography`), for
tests/it/tokens.rs. Reads one JSON request on stdin, writes one JSON answer on stdout.

  {"keys": DIR}  -> writes DIR/<type>.pem (the public key) for rsa, ec, ed and answers
                    {<type>: {"private": PEM, "jwk": public JWK}}
  {"tokens": [{"alg": ..., "key": PEM or secret or null, "claims": {...}, "headers": {...}}]}
                 -> ["<jwt>", ...]
  A token of "alg": "HS256-with-public-key" is HS256 with a public PEM as its secret (the
  algorithm-confusion attack), which PyJWT rightly refuses to make: it is made by hand.
"""

import base64
import hashlib
import hmac
import json
import sys
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm


def keys(folder):
    made = {
        "rsa": (rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm),
        "ec": (ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
        "ed": (ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm),
    }
    answer = {}
    for name, (private, algorithm) in made.items():
        public = private.public_key()
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (Path(folder) / f"{name}.pem").write_bytes(pem)
        answer[name] = {
            "private": private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            "jwk": algorithm.to_jwk(public, as_dict=True),
        }
    return answer


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(spec):
    if spec["alg"] == "HS256-with-public-key":
        header = {"alg": "HS256", "typ": "JWT", **spec.get("headers", {})}
        signed = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(spec['claims']).encode())}"
        mac = hmac.new(spec["key"].encode(), signed.encode(), hashlib.sha256).digest()
        return f"{signed}.{b64(mac)}"
    return jwt.encode(
        spec["claims"], spec.get("key"), algorithm=spec["alg"], headers=spec.get("headers")
    )


request = json.load(sys.stdin)
if "keys" in request:
    json.dump(keys(request["keys"]), sys.stdout)
else:
    json.dump([token(spec) for spec in request["tokens"]], sys.stdout)
