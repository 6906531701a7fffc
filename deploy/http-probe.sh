#!/usr/bin/env bash
# http-probe PORT PATH: exit 0 when GET http://127.0.0.1:PORT/PATH answers 200.
# The runtime image has no curl or wget; bash's /dev/tcp is enough for a probe.
set -eu
port=${1:?usage: http-probe PORT PATH}
path=${2:?usage: http-probe PORT PATH}
exec 3<>"/dev/tcp/127.0.0.1/${port}"
# HTTP/1.0 with Connection: close, so the server closes after one response.
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "${path}" >&3
IFS= read -r -t 5 status <&3 || exit 1
case "${status}" in
    "HTTP/1."?" 200 "* | "HTTP/1."?" 200"$'\r') exit 0 ;;
    *) echo "http-probe: ${path}: ${status%$'\r'}" >&2; exit 1 ;;
esac
