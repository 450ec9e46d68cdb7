# bash completion for ppnctl                                    -*- shell-script -*-
# SPDX-License-Identifier: Apache-2.0
# The word lists mirror ppnctl's command table; tests/test-install.sh checks them against
# `ppnctl --help` and every `ppnctl COMMAND [SUBCOMMAND] --help`.

_ppnctl_global_opts='--config --ledger --socket --json --bytes --help --version'
_ppnctl_commands='adopt balloon events export fleet grant history import ledger lend move node plot pool release start status stop vm'

declare -A _ppnctl_subcommands=(
  [fleet]='list trust'
  [grant]='revoke'
  [ledger]='check export history import'
  [node]='id init set show'
  [vm]='add import-libvirt list remove set show'
)

# Options by "COMMAND" or "COMMAND SUBCOMMAND".
declare -A _ppnctl_opts=(
  [adopt]='--qmp --libvirt --help'
  [balloon]='--for --help'
  [events]='--follow --json --help'
  [export]='--help'
  [fleet list]='--json --help'
  [fleet trust]='--help'
  [grant revoke]='--help'
  [history]='--since --json --help'
  [import]='--image-dir --help'
  [ledger check]='--help'
  [ledger export]='--help'
  [ledger history]='--json --help'
  [ledger import]='--replace --help'
  [lend]='--for --help'
  [move]='--to --timeout --live --grant --max-bandwidth --json --help'
  [node id]='--json --help'
  [node init]='--json --help'
  [node set]='--help'
  [node show]='--json --help'
  [plot]='--since --output --input --help'
  [pool]='--json --help'
  [release]='--help'
  [start]='--paused --dry-run --no-deflate-on-oom --no-free-page-reporting --help'
  [status]='--json --help'
  [stop]='--timeout --help'
  [vm add]='--min --max --base --shares --cpu-weight --vcpus --qmp --libvirt --disk --qemu-arg --help'
  [vm import-libvirt]='--uri --apply --json --help'
  [vm list]='--json --help'
  [vm remove]='--help'
  [vm set]='--help'
  [vm show]='--json --help'
)

# KEY= words for the KEY=VALUE commands.
declare -A _ppnctl_keys=(
  [node set]='physical= reserve= min-floor='
  [vm set]='min= max= base= vmem= shares= cpu-weight= vcpus= qmp= disks= qemu-args='
)

# Commands whose first operand is a VM name.
_ppnctl_vm_operand=' balloon history plot release ledger-history vm-remove vm-set vm-show '

_ppnctl_vms() {
  local -a args=()
  local i
  for ((i = 1; i < COMP_CWORD; i++)); do
    case ${COMP_WORDS[i]} in
      --config|--ledger|--socket) args+=("${COMP_WORDS[i]}" "${COMP_WORDS[i+1]}") ;;
    esac
  done
  ppnctl "${args[@]}" --json vm list 2>/dev/null | sed -n 's/^ *"name" *: *"\([^"]*\)".*/\1/p'
}

_ppnctl() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
  local i cmd='' sub='' nargs=0

  case $prev in
    --config|--ledger|--socket|--output|-o|--input) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --min|--max|--base|--for|--since|--shares|--cpu-weight|--vcpus|--qemu-arg) return ;;
    --qmp|--disk) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  for ((i = 1; i < COMP_CWORD; i++)); do
    local w=${COMP_WORDS[i]}
    case $w in
      --config|--ledger|--socket|--output|-o|--input|--min|--max|--base|--for|--since|--shares|--cpu-weight|--vcpus|--qmp|--disk|--qemu-arg)
        ((i++)) ;;
      -*) ;;
      *)
        if [[ -z $cmd ]]; then cmd=$w
        elif [[ -z $sub && -n ${_ppnctl_subcommands[$cmd]} ]]; then sub=$w
        else ((nargs++))
        fi ;;
    esac
  done
  if [[ -z $cmd ]]; then
    if [[ $cur == -* ]]; then
      COMPREPLY=($(compgen -W "$_ppnctl_global_opts" -- "$cur"))
    else
      COMPREPLY=($(compgen -W "$_ppnctl_commands" -- "$cur"))
    fi
    return
  fi
  if [[ -z $sub && -n ${_ppnctl_subcommands[$cmd]} ]]; then
    COMPREPLY=($(compgen -W "${_ppnctl_subcommands[$cmd]} --help" -- "$cur"))
    return
  fi
  local key=$cmd${sub:+ $sub}
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "${_ppnctl_opts[$key]}" -- "$cur"))
  elif [[ $nargs -eq 0 && $_ppnctl_vm_operand == *" ${key// /-} "* ]]; then
    COMPREPLY=($(compgen -W "$(_ppnctl_vms)" -- "$cur"))
  elif [[ $key == 'plot' ]]; then
    COMPREPLY=($(compgen -W "$(_ppnctl_vms)" -- "$cur"))
  elif [[ -n ${_ppnctl_keys[$key]} ]]; then
    compopt -o nospace 2>/dev/null
    COMPREPLY=($(compgen -W "${_ppnctl_keys[$key]}" -- "$cur"))
  elif [[ $key == 'ledger import' ]]; then
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}

complete -F _ppnctl ppnctl
