_vhost__device__udc() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="vhost__device__udc"
                ;;
            vhost__device__udc,ctl)
                cmd="vhost__device__udc__subcmd__ctl"
                ;;
            vhost__device__udc,help)
                cmd="vhost__device__udc__subcmd__help"
                ;;
            vhost__device__udc__subcmd__ctl,help)
                cmd="vhost__device__udc__subcmd__ctl__subcmd__help"
                ;;
            vhost__device__udc__subcmd__ctl,lsusb)
                cmd="vhost__device__udc__subcmd__ctl__subcmd__lsusb"
                ;;
            vhost__device__udc__subcmd__ctl,raw)
                cmd="vhost__device__udc__subcmd__ctl__subcmd__raw"
                ;;
            vhost__device__udc__subcmd__ctl,status)
                cmd="vhost__device__udc__subcmd__ctl__subcmd__status"
                ;;
            vhost__device__udc__subcmd__ctl__subcmd__help,help)
                cmd="vhost__device__udc__subcmd__ctl__subcmd__help__subcmd__help"
                ;;
            vhost__device__udc__subcmd__ctl__subcmd__help,lsusb)
                cmd="vhost__device__udc__subcmd__ctl__subcmd__help__subcmd__lsusb"
                ;;
            vhost__device__udc__subcmd__ctl__subcmd__help,raw)
                cmd="vhost__device__udc__subcmd__ctl__subcmd__help__subcmd__raw"
                ;;
            vhost__device__udc__subcmd__ctl__subcmd__help,status)
                cmd="vhost__device__udc__subcmd__ctl__subcmd__help__subcmd__status"
                ;;
            vhost__device__udc__subcmd__help,ctl)
                cmd="vhost__device__udc__subcmd__help__subcmd__ctl"
                ;;
            vhost__device__udc__subcmd__help,help)
                cmd="vhost__device__udc__subcmd__help__subcmd__help"
                ;;
            vhost__device__udc__subcmd__help__subcmd__ctl,lsusb)
                cmd="vhost__device__udc__subcmd__help__subcmd__ctl__subcmd__lsusb"
                ;;
            vhost__device__udc__subcmd__help__subcmd__ctl,raw)
                cmd="vhost__device__udc__subcmd__help__subcmd__ctl__subcmd__raw"
                ;;
            vhost__device__udc__subcmd__help__subcmd__ctl,status)
                cmd="vhost__device__udc__subcmd__help__subcmd__ctl__subcmd__status"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        vhost__device__udc)
            opts="-s -h -V --socket-path --socket-fd --print-capabilities --control-socket --pcap --pcap-snaplen --usbip-listen --iotlb-miss-timeout --poll-us --once --config --speed --max-speed --no-sg --no-auto-enumerate --strict-descriptors --inject --seed --control-socket-mode --control-socket-group --control-allow-uid --control-allow-crash --control-file-dir --log-level --help --version ctl help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --socket-path)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -s)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --socket-fd)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --control-socket)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pcap)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pcap-snaplen)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --usbip-listen)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --iotlb-miss-timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --poll-us)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --config)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --speed)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-speed)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --inject)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --seed)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --control-socket-mode)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --control-socket-group)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --control-allow-uid)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --control-file-dir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --log-level)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vhost__subcmd__device__subcmd__udc__subcmd__ctl)
            opts="-c -h --control-socket --help lsusb status raw help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --control-socket)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -c)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vhost__subcmd__device__subcmd__udc__subcmd__ctl__subcmd__help)
            opts="lsusb status raw help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vhost__subcmd__device__subcmd__udc__subcmd__ctl__subcmd__help__subcmd__help)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vhost__subcmd__device__subcmd__udc__subcmd__ctl__subcmd__help__subcmd__lsusb)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vhost__subcmd__device__subcmd__udc__subcmd__ctl__subcmd__help__subcmd__raw)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vhost__subcmd__device__subcmd__udc__subcmd__ctl__subcmd__help__subcmd__status)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vhost__subcmd__device__subcmd__udc__subcmd__ctl__subcmd__lsusb)
            opts="-v -h --verbose --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vhost__subcmd__device__subcmd__udc__subcmd__ctl__subcmd__raw)
            opts="-h --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vhost__subcmd__device__subcmd__udc__subcmd__ctl__subcmd__status)
            opts="-h --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vhost__subcmd__device__subcmd__udc__subcmd__help)
            opts="ctl help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vhost__subcmd__device__subcmd__udc__subcmd__help__subcmd__ctl)
            opts="lsusb status raw"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vhost__subcmd__device__subcmd__udc__subcmd__help__subcmd__ctl__subcmd__lsusb)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vhost__subcmd__device__subcmd__udc__subcmd__help__subcmd__ctl__subcmd__raw)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vhost__subcmd__device__subcmd__udc__subcmd__help__subcmd__ctl__subcmd__status)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 4 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        vhost__subcmd__device__subcmd__udc__subcmd__help__subcmd__help)
            opts=""
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 3 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _vhost__device__udc -o nosort -o bashdefault -o default vhost-device-udc
else
    complete -F _vhost__device__udc -o bashdefault -o default vhost-device-udc
fi
