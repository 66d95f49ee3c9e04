// gRPC core's own log lines (a refused TLS handshake, a broken stream),
// through the process log, at most kGrpcLogBurst at once, then
// kGrpcLogPerSecond: anyone who can reach a gRPC port makes such lines, and
// gRPC core writes every one of them to stderr in its own format.
#ifndef SLUICE_COMMON_GRPC_LOG_H_
#define SLUICE_COMMON_GRPC_LOG_H_

namespace sluice {

inline constexpr double kGrpcLogBurst = 100;
inline constexpr double kGrpcLogPerSecond = 10;

// Once, at start-up, before any gRPC object is made.
void RouteGrpcLogging();

}  // namespace sluice

#endif  // SLUICE_COMMON_GRPC_LOG_H_
