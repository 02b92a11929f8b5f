#!/bin/sh
# Chassis power program for OpenIPMI ipmi_sim, used by tests/peers/ipmi_sim.py.
#
# ipmi_sim runs it through popen for every Get Chassis Status and Chassis Control:
#   ipmi_sim_chassis.sh STATEFILE get power [boot ...]      -> prints "power:0|1" per parameter
#   ipmi_sim_chassis.sh STATEFILE set power 0|1 [reset 1] [shutdown 1] ...
# The power state lives in STATEFILE ("0" or "1") so tests can read and flip it out of band;
# every call is appended to STATEFILE.log so tests can see what the BMC was asked to do.
# (A power cycle arrives as "set power 0" and, about a second later, "set power 1".)
state=$1
op=$2
shift 2
echo "$op $*" >> "$state.log"

write_power() {
  echo "$1" > "$state.tmp" && mv -f "$state.tmp" "$state"
}

case $op in
  get)
    for parameter in "$@"; do
      case $parameter in
        power)
          value=0
          [ -r "$state" ] && read -r value < "$state"
          echo "power:$value" ;;
        boot) echo "boot:default" ;;
        *) echo "Invalid parameter: $parameter"; exit 1 ;;
      esac
    done ;;
  set)
    while [ $# -ge 2 ]; do
      parameter=$1
      value=$2
      shift 2
      case $parameter in
        power) write_power "$value" ;;
        # An ACPI soft-off request: the "operating system" obeys at once.
        shutdown) [ "$value" = 1 ] && write_power 0 ;;
        reset|boot|identify) : ;;
        *) echo "Invalid parameter: $parameter"; exit 1 ;;
      esac
    done ;;
  check) exit 1 ;;
  *) echo "Unknown operation: $op"; exit 1 ;;
esac
exit 0
