"""Code generation for Sluice's protos with Debian's protoc and grpc_cpp_plugin."""

def sluice_cc_proto_library(name, srcs, deps = [], **kwargs):
    """Generates C++ message and gRPC code for `srcs` and wraps it in a cc_library.

    Args:
      name: the cc_library's name.
      srcs: .proto files, paths relative to this package.
      deps: further cc deps.
      **kwargs: passed to the cc_library.
    """
    pkg = native.package_name()
    outs_h = []
    outs_cc = []
    for src in srcs:
        base = src[:-len(".proto")]
        outs_h += [base + ".pb.h", base + ".grpc.pb.h"]
        outs_cc += [base + ".pb.cc", base + ".grpc.pb.cc"]
    # Imports are relative to this package: api/sluice/x.proto imports "sluice/x.proto".
    root = pkg
    native.genrule(
        name = name + "_codegen",
        srcs = srcs,
        outs = outs_h + outs_cc,
        cmd = " ".join([
            "/usr/bin/protoc",
            "-I" + root,
            "-I/usr/include",
            "--cpp_out=$(GENDIR)/" + root,
            "--grpc_out=$(GENDIR)/" + root,
            "--plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin",
            "$(SRCS)",
        ]),
    )
    native.cc_library(
        name = name,
        srcs = outs_cc,
        hdrs = outs_h,
        includes = ["."],
        copts = ["-Wno-unused-parameter", "-Wno-deprecated-declarations"],
        deps = deps + ["@system_libs//:grpc++", "@system_libs//:protobuf"],
        **kwargs
    )
