#!/bin/busybox sh
/bin/busybox echo "$GREETING"
/bin/busybox echo "running as uid $(/bin/busybox id -u), pid $$"
