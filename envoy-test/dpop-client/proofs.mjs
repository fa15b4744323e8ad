// DPoP keys and proofs made by panva's `dpop` (the reference JavaScript client), for the tests.
//   node proofs.mjs keygen '{"alg": "ES256"}'
//     -> {"private": JWK, "public": JWK, "jkt": "<RFC 7638 thumbprint>"}
//   node proofs.mjs prove '{"alg": "ES256", "private": JWK, "public": JWK,
//                           "requests": [{"htu": "...", "htm": "GET", "accessToken": "..."}]}'
//     -> ["<proof>", ...]
import { calculateThumbprint, generateKeyPair, generateProof } from 'dpop';

const PARAMS = {
  ES256: { name: 'ECDSA', namedCurve: 'P-256' },
  RS256: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
  PS256: { name: 'RSA-PSS', hash: 'SHA-256' },
  Ed25519: { name: 'Ed25519' },
};

const [command, arg] = process.argv.slice(2);
const input = JSON.parse(arg);
const subtle = globalThis.crypto.subtle;

if (command === 'keygen') {
  const pair = await generateKeyPair(input.alg, { extractable: true });
  console.log(JSON.stringify({
    private: await subtle.exportKey('jwk', pair.privateKey),
    public: await subtle.exportKey('jwk', pair.publicKey),
    jkt: await calculateThumbprint(pair.publicKey),
  }));
} else if (command === 'prove') {
  const params = PARAMS[input.alg];
  const pair = {
    privateKey: await subtle.importKey('jwk', input.private, params, false, ['sign']),
    publicKey: await subtle.importKey('jwk', input.public, params, true, ['verify']),
  };
  const proofs = [];
  for (const r of input.requests) {
    proofs.push(await generateProof(pair, r.htu, r.htm, undefined, r.accessToken));
  }
  console.log(JSON.stringify(proofs));
} else {
  throw new Error(`unknown command ${command}`);
}
