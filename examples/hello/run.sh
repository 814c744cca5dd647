#!/usr/bin/env bash
echo "example: not yet"
