#!/usr/bin/env python3
"""Calls llmint8's Generate through Python grpcio (Debian python3-grpcio) and prints the tokens.

Stubs are generated at run time from proto/llmint8/v1/*.proto with protoc and
grpc_python_plugin, so nothing generated is checked in.

  python_client.py --target 127.0.0.1:50051 --proto_dir proto --token_ids 2,100,200 \
      --max_new_tokens 8
prints one JSON object: {"tokens": [...], "text": "...", "finish_reason": "...", "code": "OK"}.
With --tls_ca_file (and --tls_cert_file / --tls_key_file for mutual TLS) it calls over TLS, as
any grpcio client of a coordinator run with --tls_cert_file would.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile


def compile_stubs(proto_dir, out_dir):
    plugin = shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
    protos = [os.path.join("llmint8", "v1", p)
              for p in ("generation.proto", "worker.proto", "rendezvous.proto")]
    subprocess.run(["protoc", f"--proto_path={proto_dir}", f"--python_out={out_dir}",
                    f"--grpc_python_out={out_dir}",
                    f"--plugin=protoc-gen-grpc_python={plugin}", *protos], check=True)
    for d in (os.path.join(out_dir, "llmint8"), os.path.join(out_dir, "llmint8", "v1")):
        open(os.path.join(d, "__init__.py"), "a").close()
    sys.path.insert(0, out_dir)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--proto_dir", required=True)
    parser.add_argument("--token_ids", default="")
    parser.add_argument("--text", default="")
    parser.add_argument("--max_new_tokens", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--tls_ca_file", default="")
    parser.add_argument("--tls_cert_file", default="")
    parser.add_argument("--tls_key_file", default="")
    args = parser.parse_args()

    import grpc  # noqa: E402  (after argparse so --help works without grpcio)

    with tempfile.TemporaryDirectory() as out_dir:
        compile_stubs(args.proto_dir, out_dir)
        from llmint8.v1 import generation_pb2, generation_pb2_grpc

        request = generation_pb2.GenerateRequest(max_new_tokens=args.max_new_tokens,
                                                 ignore_eos=True)
        if args.token_ids:
            request.token_ids.ids.extend(int(t) for t in args.token_ids.split(","))
        else:
            request.text = args.text
        if args.tls_ca_file:
            def read(path):
                with open(path, "rb") as f:
                    return f.read()
            credentials = grpc.ssl_channel_credentials(
                root_certificates=read(args.tls_ca_file),
                private_key=read(args.tls_key_file) if args.tls_key_file else None,
                certificate_chain=read(args.tls_cert_file) if args.tls_cert_file else None)
            channel = grpc.secure_channel(args.target, credentials)
        else:
            channel = grpc.insecure_channel(args.target)
        with channel:
            stub = generation_pb2_grpc.GenerationStub(channel)
            tokens, text, finish, code = [], "", "", "OK"
            try:
                for response in stub.Generate(request, timeout=args.timeout):
                    if response.HasField("token_id"):
                        tokens.append(response.token_id)
                    text += response.text
                    if response.finish_reason:
                        finish = generation_pb2.FinishReason.Name(response.finish_reason)
            except grpc.RpcError as e:
                code = e.code().name
        print(json.dumps({"tokens": tokens, "text": text, "finish_reason": finish,
                          "code": code}))


if __name__ == "__main__":
    main()
