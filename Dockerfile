# The tomoda-promote builder image: one static binary and an empty /tmp, nothing else.
# No shell, no libc, no CA files: TLS roots are built into the binary (plus $SSL_CERT_FILE
# when set), and glibc's static resolver reads the /etc/hosts and /etc/resolv.conf that the
# container runtime mounts.
#
# Build the binary first (this image compiles nothing, so it builds without pulling any
# base image):
#   ./scripts/build-static && docker build -t tomoda-promote .
#   ./scripts/release-dist && docker build --build-arg BINARY=dist/tomoda-promote-x86_64-linux .
#
# Used as a Cloud Build step (cwd /workspace) and as a container job or step on GitHub
# (cwd /github/workspace): it runs as root, takes relative paths from whatever working
# directory the runner sets, and writes only under /tmp (besides the runner's own
# $GITHUB_OUTPUT files), so no WORKDIR is set or needed.
FROM scratch

# BINARY: a release builds the image from dist/'s binary (scripts/release-dist), the very
# bytes it publishes as the download.
ARG BINARY=target/x86_64-unknown-linux-gnu/release/tomoda-promote

# scratch has no /tmp, and each promotion fetches into a temporary repository under it.
# scripts/build-static leaves target/container/root holding only an empty tmp/ of mode
# 1777. Copying its parent keeps that mode (buildah's `COPY dir /tmp`, even with --chmod,
# makes /tmp 0755).
COPY target/container/root/ /
COPY ${BINARY} /usr/local/bin/tomoda-promote

ENTRYPOINT ["/usr/local/bin/tomoda-promote"]
