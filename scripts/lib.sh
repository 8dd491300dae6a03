# Helpers shared by the test scripts: sourced, not run. Each script sets `die` first.

# apt_install WHAT PACKAGE...: install Debian packages, or die saying why not.
apt_install() {
  local what=$1
  shift
  if ! command -v apt-get >/dev/null; then
    die "$what is missing and apt-get is not available to install it"
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "$what is missing; install it (apt-get install $*) or run as root"
    sudo="sudo -n"
  fi
  echo "installing $* with apt-get"
  # Another script of the suite may be installing at the same time: wait for its lock.
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq || die "apt-get update failed while installing $*"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null \
    || die "apt-get install $* failed"
}

# start_server LOG ARGS...: start the debug server binary with ARGS, logging to LOG; sets
# `server` (its pid) and `url` (the address it printed), or dies.
start_server() {
  local log=$1
  shift
  target/debug/manifold serve "$@" >"$log" 2>&1 &
  server=$!
  url=""
  for _ in $(seq 1 100); do
    url=$(sed -n 's/^manifold: listening on //p' "$log" | head -n1)
    [ -n "$url" ] && return 0
    kill -0 "$server" 2>/dev/null || { cat "$log" >&2; die "the server exited before listening"; }
    sleep 0.1
  done
  cat "$log" >&2
  die "the server did not report its address"
}
