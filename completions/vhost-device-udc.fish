complete -c vhost-device-udc -s s -l socket-path -d 'vhost-user socket to listen on; QEMU connects to it with `-chardev socket,path=PATH -device vhost-user-udc-pci,chardev=...`' -r -F
complete -c vhost-device-udc -l socket-fd -d 'A listening Unix socket to serve instead of --socket-path, passed open by a supervisor (vhost-user.rst\'s backend program conventions); the daemon owns it from then on and never removes its path' -r
complete -c vhost-device-udc -l control-socket -d 'Unix socket for the control protocol (docs/control-socket.md): list the device, send control requests, run transfers and streams, read statistics, change the host\'s behaviour' -r -F
complete -c vhost-device-udc -l pcap -d 'Capture every transfer on the bus, as the host sees it, into this new file: usbmon\'s pcap format, which Wireshark and tshark read (docs/capture.md). The control socket\'s `capture` starts and stops one at run time' -r -F
complete -c vhost-device-udc -l pcap-snaplen -d 'Data bytes kept per captured event; longer transfers are cut (their length is still recorded)' -r
complete -c vhost-device-udc -l config -d 'TOML file describing the controller, the host and traffic streams (see docs/configuration.md). Command-line options override it' -r -F
complete -c vhost-device-udc -l speed -d 'Host port speed: full, high or super. The bus runs at the lower of this and --max-speed. Default: high' -r
complete -c vhost-device-udc -l max-speed -d 'Fastest speed the controller advertises to the guest: full, high or super. Default: super' -r
complete -c vhost-device-udc -l inject -d 'Delay or fault injection, KEY=VALUE or EP.KEY=VALUE (repeatable; see docs/injection.md), e.g. `latency=100us..2ms`, `ep2out.stall=nth:3`, `bandwidth=high-speed`. Applied over the config file\'s [inject]' -r
complete -c vhost-device-udc -l seed -d 'Seed of the injection\'s random choices: the same seed, settings and guest requests give the same injected events' -r
complete -c vhost-device-udc -l control-socket-mode -d 'File mode of the control socket, in octal. Whoever can connect can read and write the guest\'s transfer buffers' -r
complete -c vhost-device-udc -l control-socket-group -d 'Group of the control socket (a name or a number); its members may connect when the mode lets them (e.g. --control-socket-mode 0660)' -r
complete -c vhost-device-udc -l control-allow-uid -d 'Another user allowed to connect besides root and the daemon\'s own user (repeatable)' -r
complete -c vhost-device-udc -l control-file-dir -d 'Accept `file:PATH` stream sources for files inside DIR; without it the control socket cannot make the daemon read files' -r -F
complete -c vhost-device-udc -l log-level -d 'Log level: error, warn, info, debug, trace (RUST_LOG overrides)' -r
complete -c vhost-device-udc -l print-capabilities -d 'Print the backend\'s capabilities as JSON (vhost-user.rst, as libvirt reads them) and exit; every other option is ignored'
complete -c vhost-device-udc -l once -d 'Serve one vhost-user connection and exit when it ends, instead of waiting for the frontend to reconnect'
complete -c vhost-device-udc -l no-sg -d 'Advertise no scatter-gather (one segment per request). FunctionFS\'s DMABUF interface then refuses to attach with -EPERM'
complete -c vhost-device-udc -l no-auto-enumerate -d 'Do not enumerate when the gadget pulls up; wait for the control socket\'s "enumerate"'
complete -c vhost-device-udc -l control-allow-crash -d 'Accept the `crash` request, which ends the daemon at once (for testing how QEMU and the guest recover from a lost back end)'
complete -c vhost-device-udc -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vhost-device-udc -s V -l version -d 'Print version'
