#!/bin/bash
# The image's health check: does this container's own listener answer /readyz with 200?
# Through bash's /dev/tcp, so the image needs no HTTP client.
set -u
bind=${QUOTASK_BIND:-127.0.0.1:5000}
host=${bind%:*} port=${bind##*:}
host=${host#[} host=${host%]}
case $host in 0.0.0.0 | :: | "") host=127.0.0.1 ;; esac
exec 3<>"/dev/tcp/$host/$port" || exit 1
printf 'GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
read -r _ status _ <&3
[[ $status == 200 ]]
