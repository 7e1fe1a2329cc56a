//! The i8042 PC keyboard controller with a keyboard behind it, reduced to what a microVM needs:
//! - the "pulse reset line" command (0xFE to port 0x64) ends the VM: Linux uses it for
//!   `reboot=k` (its default without ACPI), the Wisp unikernel to power off;
//! - a keyboard that answers Linux's i8042 and atkbd probes and into which the VMM injects
//!   Ctrl-Alt-Del (the API's `SendCtrlAltDel`, as in Firecracker), delivered on IRQ 1.
//!
//! vm-superio's `I8042Device` only does the reset, so the controller is modelled here. There
//! is no AUX (mouse) port: the loopback and AUX tests answer "absent" at once, so a guest
//! without `i8042.noaux` does not wait for timeouts. Controller answers are polled by drivers
//! and raise no interrupt; bytes from the keyboard raise IRQ 1 when the guest enabled it.

use crate::trigger::EventFdTrigger;
use std::collections::VecDeque;
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vm_superio::Trigger;

/// First port of the controller (data port 0x60; command/status is 0x64 = base + 4).
pub const I8042_PORT: u16 = 0x60;
/// Ports 0x60..=0x64 (0x61 is the PIT's speaker port, which KVM's in-kernel PIT serves).
pub const I8042_PORT_COUNT: u16 = 5;
/// The keyboard's interrupt line.
pub const I8042_KBD_IRQ: u32 = 1;

const DATA_OFFSET: PioAddressOffset = 0;
const COMMAND_OFFSET: PioAddressOffset = 4;

// Status register bits (read from port 0x64).
const STR_OBF: u8 = 0x01;
const STR_SYS: u8 = 0x04;
const STR_CMDDAT: u8 = 0x08;
/// Set while the keyboard is *not* inhibited by the key lock.
const STR_UNLOCKED: u8 = 0x10;

// Controller configuration byte ("command byte", CTR) bits.
const CTR_KBDINT: u8 = 0x01;
const CTR_SYS: u8 = 0x04;
const CTR_KBDDIS: u8 = 0x10;
const CTR_AUXDIS: u8 = 0x20;
const CTR_XLATE: u8 = 0x40;

// Controller commands (written to port 0x64).
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xA7;
const CMD_AUX_ENABLE: u8 = 0xA8;
const CMD_AUX_TEST: u8 = 0xA9;
const CMD_SELF_TEST: u8 = 0xAA;
const CMD_KBD_TEST: u8 = 0xAB;
const CMD_KBD_DISABLE: u8 = 0xAD;
const CMD_KBD_ENABLE: u8 = 0xAE;
const CMD_READ_INPUT_PORT: u8 = 0xC0;
const CMD_READ_OUTPUT_PORT: u8 = 0xD0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xD1;
const CMD_KBD_LOOP: u8 = 0xD2;
const CMD_AUX_LOOP: u8 = 0xD3;
const CMD_AUX_SEND: u8 = 0xD4;
const CMD_RESET_CPU: u8 = 0xFE;

/// Self-test passed.
const SELF_TEST_OK: u8 = 0x55;
/// "Clock line stuck low": how a controller without an AUX port answers the AUX test.
const AUX_TEST_ABSENT: u8 = 0x01;

// Keyboard commands (written to port 0x60 with no controller command pending) and answers.
const KBD_SET_LEDS: u8 = 0xED;
const KBD_ECHO: u8 = 0xEE;
const KBD_SCANCODE_SET: u8 = 0xF0;
const KBD_GET_ID: u8 = 0xF2;
const KBD_SET_TYPEMATIC: u8 = 0xF3;
const KBD_ENABLE: u8 = 0xF4;
const KBD_DISABLE: u8 = 0xF5;
const KBD_RESET: u8 = 0xFF;
const KBD_ACK: u8 = 0xFA;
const KBD_SELF_TEST_OK: u8 = 0xAA;
/// An MF2 keyboard's ID (0xAB 0x83).
const KBD_ID: [u8; 2] = [0xAB, 0x83];

/// Ctrl↓ Alt↓ Delete↓ Delete↑ Alt↑ Ctrl↑ in scancode set 2 (what the keyboard sends).
const CTRL_ALT_DEL_SET2: &[u8] = &[
    0x14, 0x11, 0xE0, 0x71, 0xE0, 0xF0, 0x71, 0xF0, 0x11, 0xF0, 0x14,
];
/// The same in set 1 (what the controller hands on when the guest turned translation on).
const CTRL_ALT_DEL_SET1: &[u8] = &[0x1D, 0x38, 0xE0, 0x53, 0xE0, 0xD3, 0xB8, 0x9D];

/// Bytes the controller holds for the guest; a real one holds 16, the chord needs 11.
const BUFFER_CAPACITY: usize = 32;

/// Why a key press could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum I8042Error {
    #[error("the guest has not enabled the keyboard (no i8042 keyboard driver is running)")]
    KeyboardDisabled,
    #[error("the keyboard buffer is full: the guest is not reading the i8042")]
    BufferFull,
    #[error("cannot raise the keyboard interrupt: {0}")]
    Interrupt(#[source] std::io::Error),
}

/// A byte written to port 0x60 completes this earlier command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    WriteCtr,
    WriteOutputPort,
    KbdLoop,
    AuxLoop,
    AuxSend,
    /// A keyboard command that takes a parameter byte (LEDs, typematic rate, scancode set).
    KbdParam(u8),
}

/// The controller's registers and output buffer, for a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042Snapshot {
    pub ctr: u8,
    pub output_port: u8,
    pub last_was_command: bool,
    /// The pending command (0 none, 1 write CTR, 2 write output port, 3 keyboard loop, 4 AUX
    /// loop, 5 AUX send, 0x100 + n: keyboard command n awaiting its parameter).
    pub pending: u16,
    pub scanning: bool,
    pub buffer: Vec<u8>,
    pub last_read: u8,
}

/// The controller and its keyboard as a port-I/O device.
pub struct I8042 {
    reset: EventFdTrigger,
    /// IRQ 1; `None` when the VMM has no interrupt line for it (key injection then fails).
    kbd_irq: Option<EventFdTrigger>,
    ctr: u8,
    output_port: u8,
    /// Whether the last write went to the command port (status bit 3).
    last_was_command: bool,
    pending: Pending,
    /// The keyboard scans (0xF4/0xF5); a real one starts enabled after power-on.
    scanning: bool,
    buffer: VecDeque<u8>,
    /// What a data read returns with the buffer empty (hardware keeps the last byte).
    last_read: u8,
}

impl I8042 {
    /// A controller whose reset command writes `reset` and whose keyboard interrupts write
    /// `kbd_irq` (an irqfd for [`I8042_KBD_IRQ`]).
    pub fn new(reset: EventFdTrigger, kbd_irq: Option<EventFdTrigger>) -> Self {
        I8042 {
            reset,
            kbd_irq,
            // As a BIOS leaves it: keyboard interrupt on, untranslated (Linux then drives
            // the keyboard in set 2 directly), no AUX port.
            ctr: CTR_KBDINT | CTR_SYS | CTR_AUXDIS,
            // Bit 0: reset line not asserted; bit 1: A20 enabled.
            output_port: 0x03,
            last_was_command: false,
            pending: Pending::None,
            scanning: true,
            buffer: VecDeque::with_capacity(BUFFER_CAPACITY),
            last_read: 0,
        }
    }

    /// The controller's state.
    pub fn save_state(&self) -> I8042Snapshot {
        let pending = match self.pending {
            Pending::None => 0,
            Pending::WriteCtr => 1,
            Pending::WriteOutputPort => 2,
            Pending::KbdLoop => 3,
            Pending::AuxLoop => 4,
            Pending::AuxSend => 5,
            Pending::KbdParam(cmd) => 0x100 | u16::from(cmd),
        };
        I8042Snapshot {
            ctr: self.ctr,
            output_port: self.output_port,
            last_was_command: self.last_was_command,
            pending,
            scanning: self.scanning,
            buffer: self.buffer.iter().copied().collect(),
            last_read: self.last_read,
        }
    }

    /// Puts the controller into `state` (an unknown pending command or an overlong buffer is
    /// refused and changes nothing).
    pub fn restore_state(&mut self, state: &I8042Snapshot) -> Result<(), String> {
        let pending = match state.pending {
            0 => Pending::None,
            1 => Pending::WriteCtr,
            2 => Pending::WriteOutputPort,
            3 => Pending::KbdLoop,
            4 => Pending::AuxLoop,
            5 => Pending::AuxSend,
            p if p & 0xff00 == 0x100 => Pending::KbdParam((p & 0xff) as u8),
            p => return Err(format!("unknown pending i8042 command {p:#x}")),
        };
        if state.buffer.len() > BUFFER_CAPACITY {
            return Err(format!("{} bytes in the i8042 buffer", state.buffer.len()));
        }
        self.ctr = state.ctr;
        self.output_port = state.output_port;
        self.last_was_command = state.last_was_command;
        self.pending = pending;
        self.scanning = state.scanning;
        self.buffer = state.buffer.iter().copied().collect();
        self.last_read = state.last_read;
        Ok(())
    }

    /// Queues Ctrl-Alt-Del (press and release) on the keyboard and interrupts the guest.
    pub fn send_ctrl_alt_del(&mut self) -> Result<(), I8042Error> {
        if self.ctr & CTR_KBDDIS != 0 || self.ctr & CTR_KBDINT == 0 || !self.scanning {
            return Err(I8042Error::KeyboardDisabled);
        }
        let codes = if self.ctr & CTR_XLATE != 0 {
            CTRL_ALT_DEL_SET1
        } else {
            CTRL_ALT_DEL_SET2
        };
        if self.buffer.len() + codes.len() > BUFFER_CAPACITY {
            return Err(I8042Error::BufferFull);
        }
        self.keyboard_bytes(codes)
    }

    fn status(&self) -> u8 {
        let mut status = STR_SYS | STR_UNLOCKED;
        if !self.buffer.is_empty() {
            status |= STR_OBF;
        }
        if self.last_was_command {
            status |= STR_CMDDAT;
        }
        status
    }

    fn read_data(&mut self) -> u8 {
        if let Some(byte) = self.buffer.pop_front() {
            self.last_read = byte;
            // One byte per interrupt: Linux's handler reads one and returns.
            if !self.buffer.is_empty() {
                self.raise_kbd_irq();
            }
        }
        self.last_read
    }

    /// A controller answer: polled by the driver, no interrupt. Dropped when the buffer is
    /// full (the driver is not reading; a real controller would overwrite).
    fn controller_byte(&mut self, byte: u8) {
        if self.buffer.len() < BUFFER_CAPACITY {
            self.buffer.push_back(byte);
        }
    }

    /// Bytes from the keyboard: queued, and IRQ 1 raised if the guest enabled it.
    fn keyboard_bytes(&mut self, bytes: &[u8]) -> Result<(), I8042Error> {
        let was_empty = self.buffer.is_empty();
        for &byte in bytes {
            if self.buffer.len() == BUFFER_CAPACITY {
                return Err(I8042Error::BufferFull);
            }
            self.buffer.push_back(byte);
        }
        if was_empty && !self.buffer.is_empty() && self.ctr & CTR_KBDINT != 0 {
            if let Some(irq) = &self.kbd_irq {
                irq.trigger().map_err(I8042Error::Interrupt)?;
            }
        }
        Ok(())
    }

    /// Keyboard answers to the guest's commands; a full buffer only loses the answer.
    fn keyboard_answer(&mut self, bytes: &[u8]) {
        if let Err(e) = self.keyboard_bytes(bytes) {
            log::debug!("i8042: keyboard answer lost: {e}");
        }
    }

    fn raise_kbd_irq(&self) {
        if self.ctr & CTR_KBDINT == 0 {
            return;
        }
        if let Some(irq) = &self.kbd_irq {
            if let Err(e) = irq.trigger() {
                log::error!("i8042: cannot raise the keyboard interrupt: {e}");
            }
        }
    }

    fn write_command(&mut self, command: u8) {
        self.pending = Pending::None;
        match command {
            CMD_READ_CTR => self.controller_byte(self.ctr),
            CMD_WRITE_CTR => self.pending = Pending::WriteCtr,
            CMD_AUX_DISABLE => self.ctr |= CTR_AUXDIS,
            CMD_AUX_ENABLE => self.ctr &= !CTR_AUXDIS,
            CMD_AUX_TEST => self.controller_byte(AUX_TEST_ABSENT),
            CMD_SELF_TEST => self.controller_byte(SELF_TEST_OK),
            CMD_KBD_TEST => self.controller_byte(0x00),
            CMD_KBD_DISABLE => self.ctr |= CTR_KBDDIS,
            CMD_KBD_ENABLE => self.ctr &= !CTR_KBDDIS,
            CMD_READ_INPUT_PORT => self.controller_byte(0x00),
            CMD_READ_OUTPUT_PORT => self.controller_byte(self.output_port),
            CMD_WRITE_OUTPUT_PORT => self.pending = Pending::WriteOutputPort,
            CMD_KBD_LOOP => self.pending = Pending::KbdLoop,
            CMD_AUX_LOOP => self.pending = Pending::AuxLoop,
            CMD_AUX_SEND => self.pending = Pending::AuxSend,
            CMD_RESET_CPU => {
                if let Err(e) = self.reset.trigger() {
                    log::error!("i8042: cannot signal the reset: {e}");
                }
            }
            other => log::debug!("i8042: ignored controller command {other:#04x}"),
        }
    }

    fn write_data(&mut self, byte: u8) {
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::WriteCtr => {
                let had_data = !self.buffer.is_empty();
                let irq_was_off = self.ctr & CTR_KBDINT == 0;
                self.ctr = byte;
                if had_data && irq_was_off {
                    self.raise_kbd_irq();
                }
            }
            Pending::WriteOutputPort => self.output_port = byte,
            Pending::KbdLoop => self.keyboard_answer(&[byte]),
            // Echoed without the AUX-data status bit: Linux reads that as "no AUX port"
            // and stops probing at once instead of timing out.
            Pending::AuxLoop => self.controller_byte(byte),
            Pending::AuxSend => log::debug!("i8042: no AUX device for {byte:#04x}"),
            Pending::KbdParam(command) => self.keyboard_param(command, byte),
            Pending::None => self.keyboard_command(byte),
        }
    }

    fn keyboard_command(&mut self, command: u8) {
        match command {
            KBD_SET_LEDS | KBD_SET_TYPEMATIC | KBD_SCANCODE_SET => {
                self.pending = Pending::KbdParam(command);
                self.keyboard_answer(&[KBD_ACK]);
            }
            KBD_ECHO => self.keyboard_answer(&[KBD_ECHO]),
            KBD_GET_ID => self.keyboard_answer(&[KBD_ACK, KBD_ID[0], KBD_ID[1]]),
            KBD_ENABLE => {
                self.scanning = true;
                self.keyboard_answer(&[KBD_ACK]);
            }
            KBD_DISABLE => {
                self.scanning = false;
                self.keyboard_answer(&[KBD_ACK]);
            }
            KBD_RESET => {
                self.scanning = true;
                self.keyboard_answer(&[KBD_ACK, KBD_SELF_TEST_OK]);
            }
            // Set defaults, resend and the set-3 key-type commands: acknowledged, no effect.
            _ => self.keyboard_answer(&[KBD_ACK]),
        }
    }

    fn keyboard_param(&mut self, command: u8, param: u8) {
        if command == KBD_SCANCODE_SET && param == 0 {
            // "Which set?": always set 2, the only one the chord is sent in.
            self.keyboard_answer(&[KBD_ACK, 0x02]);
        } else {
            self.keyboard_answer(&[KBD_ACK]);
        }
    }
}

impl MutDevicePio for I8042 {
    fn pio_read(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        let [byte] = data else { return };
        *byte = match offset {
            DATA_OFFSET => self.read_data(),
            COMMAND_OFFSET => self.status(),
            _ => 0xFF,
        };
    }

    fn pio_write(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        let [byte] = data else { return };
        match offset {
            DATA_OFFSET => {
                self.last_was_command = false;
                self.write_data(*byte);
            }
            COMMAND_OFFSET => {
                self.last_was_command = true;
                self.write_command(*byte);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EventFd;

    struct Rig {
        kbd: I8042,
        reset: EventFd,
        irq: EventFd,
    }

    fn rig() -> Rig {
        let reset = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let kbd = I8042::new(
            EventFdTrigger::new(reset.try_clone().unwrap()),
            Some(EventFdTrigger::new(irq.try_clone().unwrap())),
        );
        Rig { kbd, reset, irq }
    }

    impl Rig {
        fn command(&mut self, byte: u8) {
            self.kbd
                .pio_write(PioAddress(I8042_PORT), COMMAND_OFFSET, &[byte]);
        }
        fn write(&mut self, byte: u8) {
            self.kbd
                .pio_write(PioAddress(I8042_PORT), DATA_OFFSET, &[byte]);
        }
        fn status(&mut self) -> u8 {
            let mut b = [0];
            self.kbd
                .pio_read(PioAddress(I8042_PORT), COMMAND_OFFSET, &mut b);
            b[0]
        }
        fn read(&mut self) -> u8 {
            let mut b = [0];
            self.kbd
                .pio_read(PioAddress(I8042_PORT), DATA_OFFSET, &mut b);
            b[0]
        }
        /// Reads while the status says data is there, as Linux's i8042 driver does.
        fn drain(&mut self) -> Vec<u8> {
            let mut out = Vec::new();
            while self.status() & STR_OBF != 0 {
                out.push(self.read());
            }
            out
        }
        fn irqs(&self) -> u64 {
            self.irq.read().unwrap_or(0)
        }
    }

    #[test]
    fn reset_command_signals_the_vmm_and_other_writes_do_not() {
        let mut r = rig();
        r.command(CMD_SELF_TEST);
        r.write(0xFE);
        assert!(r.reset.read().is_err(), "no reset expected yet");
        r.command(CMD_RESET_CPU);
        assert_eq!(r.reset.read().unwrap(), 1);
    }

    #[test]
    fn linux_controller_probe_sees_a_keyboard_and_no_aux_port() {
        let mut r = rig();
        assert_eq!(r.status() & STR_OBF, 0, "nothing to read at power-on");
        r.command(CMD_SELF_TEST);
        assert_eq!(r.drain(), [SELF_TEST_OK]);
        r.command(CMD_READ_CTR);
        let ctr = r.drain()[0];
        assert_eq!(ctr & CTR_XLATE, 0, "untranslated, so Linux drives set 2");
        // Disable the keyboard and its interrupt while probing, as i8042_controller_init.
        r.command(CMD_WRITE_CTR);
        r.write((ctr | CTR_KBDDIS) & !CTR_KBDINT);
        r.command(CMD_READ_CTR);
        assert_eq!(r.drain(), [(ctr | CTR_KBDDIS) & !CTR_KBDINT]);
        // i8042_check_aux: the loopback answer lacks the AUX bit, the AUX test says absent.
        r.command(CMD_AUX_LOOP);
        r.write(0x5A);
        assert_eq!(r.status() & 0x20, 0);
        assert_eq!(r.drain(), [0x5A]);
        r.command(CMD_AUX_TEST);
        assert_eq!(r.drain(), [AUX_TEST_ABSENT]);
        // A20 through the output port (i8042_platform_init writes 0xdf).
        r.command(CMD_WRITE_OUTPUT_PORT);
        r.write(0xDF);
        r.command(CMD_READ_OUTPUT_PORT);
        assert_eq!(r.drain(), [0xDF]);
        assert!(r.reset.read().is_err());
        assert_eq!(r.irqs(), 0, "controller answers are polled, not interrupts");
    }

    #[test]
    fn atkbd_probe_gets_acks_and_the_mf2_id_by_interrupt() {
        let mut r = rig();
        r.write(KBD_GET_ID);
        assert_eq!(r.irqs(), 1);
        assert_eq!(r.read(), KBD_ACK);
        assert_eq!(r.irqs(), 1, "a second interrupt for the bytes still queued");
        assert_eq!(r.read(), 0xAB);
        assert_eq!(r.irqs(), 1);
        assert_eq!(r.read(), 0x83);
        assert_eq!(r.irqs(), 0, "no interrupt once the buffer is empty");
        r.write(KBD_SET_LEDS);
        r.write(0x02);
        assert_eq!(r.drain(), [KBD_ACK, KBD_ACK]);
        r.write(KBD_SCANCODE_SET);
        r.write(0x00);
        assert_eq!(r.drain(), [KBD_ACK, KBD_ACK, 0x02]);
        r.write(KBD_RESET);
        assert_eq!(r.drain(), [KBD_ACK, KBD_SELF_TEST_OK]);
        r.write(KBD_ECHO);
        assert_eq!(r.drain(), [KBD_ECHO]);
    }

    #[test]
    fn ctrl_alt_del_arrives_in_set_2_or_set_1_with_translation() {
        let mut r = rig();
        r.kbd.send_ctrl_alt_del().unwrap();
        assert_eq!(r.irqs(), 1);
        assert_eq!(r.drain(), CTRL_ALT_DEL_SET2);
        r.command(CMD_WRITE_CTR);
        r.write(CTR_KBDINT | CTR_SYS | CTR_XLATE);
        r.kbd.send_ctrl_alt_del().unwrap();
        assert_eq!(r.drain(), CTRL_ALT_DEL_SET1);
    }

    #[test]
    fn ctrl_alt_del_is_refused_while_the_guest_keeps_the_keyboard_off() {
        let mut r = rig();
        r.command(CMD_KBD_DISABLE);
        assert!(matches!(
            r.kbd.send_ctrl_alt_del(),
            Err(I8042Error::KeyboardDisabled)
        ));
        r.command(CMD_KBD_ENABLE);
        r.write(KBD_DISABLE);
        r.drain();
        assert!(matches!(
            r.kbd.send_ctrl_alt_del(),
            Err(I8042Error::KeyboardDisabled)
        ));
        r.write(KBD_ENABLE);
        r.drain();
        r.kbd.send_ctrl_alt_del().unwrap();
        // A guest that never reads: the buffer fills and further presses are refused.
        r.kbd.send_ctrl_alt_del().unwrap();
        assert!(matches!(
            r.kbd.send_ctrl_alt_del(),
            Err(I8042Error::BufferFull)
        ));
        assert_eq!(r.drain().len(), 2 * CTRL_ALT_DEL_SET2.len());
    }

    #[test]
    fn stray_accesses_are_harmless() {
        let mut r = rig();
        for offset in 0..I8042_PORT_COUNT {
            let mut wide = [0u8; 2];
            r.kbd.pio_read(PioAddress(I8042_PORT), offset, &mut wide);
            r.kbd.pio_write(PioAddress(I8042_PORT), offset, &[1, 2, 3]);
            r.kbd.pio_write(PioAddress(I8042_PORT), offset, &[0x5A]);
        }
        for command in 0..=u8::MAX {
            if command != CMD_RESET_CPU {
                r.command(command);
                r.write(0x00);
            }
        }
        assert!(r.reset.read().is_err());
    }
}
