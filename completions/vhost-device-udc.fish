# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_vhost_device_udc_global_optspecs
    string join \n s/socket-path= socket-fd= print-capabilities control-socket= pcap= pcap-snaplen= usbip-listen= iotlb-miss-timeout= poll-us= once config= speed= max-speed= no-sg no-auto-enumerate strict-descriptors inject= seed= control-socket-mode= control-socket-group= control-allow-uid= control-allow-crash control-file-dir= log-level= h/help V/version
end

function __fish_vhost_device_udc_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_vhost_device_udc_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_vhost_device_udc_using_subcommand
    set -l cmd (__fish_vhost_device_udc_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -s s -l socket-path -d 'vhost-user socket to listen on; QEMU connects to it with `-chardev socket,path=PATH -device vhost-user-udc-pci,chardev=...`' -r -F
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l socket-fd -d 'A listening Unix socket to serve instead of --socket-path, passed open by a supervisor (vhost-user.rst\'s backend program conventions); the daemon owns it from then on and never removes its path' -r
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l control-socket -d 'Unix socket for the control protocol (docs/control-socket.md): list the device, send control requests, run transfers and streams, read statistics, change the host\'s behaviour' -r -F
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l pcap -d 'Capture every transfer on the bus, as the host sees it, into this new file: usbmon\'s pcap format, which Wireshark and tshark read (docs/capture.md). The control socket\'s `capture` starts and stops one at run time' -r -F
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l pcap-snaplen -d 'Data bytes kept per captured event; longer transfers are cut (their length is still recorded)' -r
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l usbip-listen -d 'Export the gadget over USB/IP (docs/usbip.md) on a Unix socket (`unix:PATH`, or a path) or a TCP port on a loopback address (`127.0.0.1:3240`, or a bare port): vhci_hcd (`usbip attach`) imports it, and the built-in host stands aside while it does' -r
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l iotlb-miss-timeout -d 'How long a DMA access waits for the front end to answer an IOTLB miss (behind a vIOMMU, docs/iommu.md) before the request fails with a DMA fault, in milliseconds' -r
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l poll-us -d 'After the transfer queue runs dry, watch it this many microseconds for the driver\'s next request before sleeping until its kick (0: do not). The watching thread yields to any other that has work, so it only keeps an otherwise idle CPU awake: where waking one is slow (a host that is itself a VM), a request\'s round trip is shorter for it (docs/performance.md)' -r
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l config -d 'TOML file describing the controller, the host and traffic streams (see docs/configuration.md). Command-line options override it' -r -F
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l speed -d 'Host port speed: full, high or super. The bus runs at the lower of this and --max-speed. Default: high' -r
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l max-speed -d 'Fastest speed the controller advertises to the guest: full, high or super. Default: super' -r
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l inject -d 'Delay or fault injection, KEY=VALUE or EP.KEY=VALUE (repeatable; see docs/injection.md), e.g. `latency=100us..2ms`, `ep2out.stall=nth:3`, `bandwidth=high-speed`. Applied over the config file\'s [inject]' -r
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l seed -d 'Seed of the injection\'s random choices: the same seed, settings and guest requests give the same injected events' -r
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l control-socket-mode -d 'File mode of the control socket, in octal. Whoever can connect can read and write the guest\'s transfer buffers' -r
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l control-socket-group -d 'Group of the control socket (a name or a number); its members may connect when the mode lets them (e.g. --control-socket-mode 0660)' -r
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l control-allow-uid -d 'Another user allowed to connect besides root and the daemon\'s own user (repeatable)' -r
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l control-file-dir -d 'Accept `file:PATH` stream sources for files inside DIR; without it the control socket cannot make the daemon read files' -r -F
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l log-level -d 'Log level: error, warn, info, debug, trace (RUST_LOG overrides)' -r
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l print-capabilities -d 'Print the backend\'s capabilities as JSON (vhost-user.rst, as libvirt reads them) and exit; every other option is ignored'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l once -d 'Serve one vhost-user connection and exit when it ends, instead of waiting for the frontend to reconnect'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l no-sg -d 'Advertise no scatter-gather (one segment per request). FunctionFS\'s DMABUF interface then refuses to attach with -EPERM'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l no-auto-enumerate -d 'Do not enumerate when the gadget pulls up; wait for the control socket\'s "enumerate"'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l strict-descriptors -d 'Refuse a device whose descriptors break a rule of chapter 9, naming the rule. Default: take them as Linux\'s usbcore does (skip, fix up or accept, each defect logged and in `status`; see docs/descriptor-checks.md)'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -l control-allow-crash -d 'Accept the `crash` request, which ends the daemon at once (for testing how QEMU and the guest recover from a lost back end)'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -s V -l version -d 'Print version'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -f -a "ctl" -d 'Talk to a running daemon through its control socket'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand ctl; and not __fish_seen_subcommand_from lsusb status raw help" -s c -l control-socket -d 'The daemon\'s --control-socket' -r -F
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand ctl; and not __fish_seen_subcommand_from lsusb status raw help" -s h -l help -d 'Print help'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand ctl; and not __fish_seen_subcommand_from lsusb status raw help" -f -a "lsusb" -d 'The device the host enumerated, as lsusb prints it (names from /usr/share/misc/usb.ids where the usb.ids package is installed)'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand ctl; and not __fish_seen_subcommand_from lsusb status raw help" -f -a "status" -d 'The daemon\'s status (docs/control-socket.md), as JSON'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand ctl; and not __fish_seen_subcommand_from lsusb status raw help" -f -a "raw" -d 'One request of docs/control-socket.md, as a JSON line; the answer is printed'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand ctl; and not __fish_seen_subcommand_from lsusb status raw help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand ctl; and __fish_seen_subcommand_from lsusb" -s v -l verbose -d 'Every descriptor, as `lsusb -v`'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand ctl; and __fish_seen_subcommand_from lsusb" -s h -l help -d 'Print help'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand ctl; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand ctl; and __fish_seen_subcommand_from raw" -s h -l help -d 'Print help'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "lsusb" -d 'The device the host enumerated, as lsusb prints it (names from /usr/share/misc/usb.ids where the usb.ids package is installed)'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "status" -d 'The daemon\'s status (docs/control-socket.md), as JSON'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "raw" -d 'One request of docs/control-socket.md, as a JSON line; the answer is printed'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand help; and not __fish_seen_subcommand_from ctl help" -f -a "ctl" -d 'Talk to a running daemon through its control socket'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand help; and not __fish_seen_subcommand_from ctl help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "lsusb" -d 'The device the host enumerated, as lsusb prints it (names from /usr/share/misc/usb.ids where the usb.ids package is installed)'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "status" -d 'The daemon\'s status (docs/control-socket.md), as JSON'
complete -c vhost-device-udc -n "__fish_vhost_device_udc_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "raw" -d 'One request of docs/control-socket.md, as a JSON line; the answer is printed'
