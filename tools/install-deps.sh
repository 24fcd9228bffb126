#!/bin/sh
# Installs the Debian packages named on the command line that are missing.
# As root: apt-get installs them. Otherwise: prints the exact command and fails.
missing=""
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = "0" ]; then
  echo "installing Debian packages:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $missing >/dev/null || {
    echo "error: apt-get install$missing failed" >&2; exit 1; }
else
  echo "error: missing Debian packages. Run as root:" >&2
  echo "  sudo apt-get install -y$missing" >&2
  exit 1
fi
