# Stand-in for OE-core's logging.bbclass: messages go to BitBake through ${LOGFIFO}, which
# bb.build creates for each shell task, else to the task log. bbfatal ends the task.

bbnote() {
	if [ -p ${LOGFIFO} ]; then
		printf "%b\0" "bbnote $*" > ${LOGFIFO}
	else
		echo "NOTE: $*"
	fi
}

bbwarn() {
	if [ -p ${LOGFIFO} ]; then
		printf "%b\0" "bbwarn $*" > ${LOGFIFO}
	else
		echo "WARNING: $*"
	fi
}

bberror() {
	if [ -p ${LOGFIFO} ]; then
		printf "%b\0" "bberror $*" > ${LOGFIFO}
	else
		echo "ERROR: $*"
	fi
}

bbfatal() {
	if [ -p ${LOGFIFO} ]; then
		printf "%b\0" "bbfatal $*" > ${LOGFIFO}
	else
		echo "ERROR: $*"
	fi
	exit 1
}
