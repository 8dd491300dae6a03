"""Attach to the TUN device named on the command line and hold it until killed.

bench/netns.sh uses it where the kernel has no veth: a TUN device with no process
attached has no carrier, and libnice (GStreamer) gathers no candidate on an interface
that is not running. Nothing is read from or written to the device: the addresses on it
are local, so their traffic goes through lo.
"""
import fcntl
import os
import signal
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000

fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", sys.argv[1].encode(), IFF_TUN | IFF_NO_PI))
print("tun-hold: attached", flush=True)
signal.pause()
