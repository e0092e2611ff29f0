/*
 * testguest entry: PVH (Xen HVM direct boot ABI, also x86 boot protocol
 * "32-bit PVH entry").  We arrive in 32-bit protected mode, paging off,
 * flat 4 GiB segments, %ebx = physical address of struct hvm_start_info.
 * We load our own GDT, build identity page tables for the first 4 GiB
 * (2 MiB pages), switch to long mode and call tg_main(start_info).
 *
 * The application processors come in through a real-mode trampoline that
 * smp.c copies to TG_TRAMPOLINE (0x8000); it is position independent and
 * only needs CS = its own segment (which a SIPI gives it).
 */

#define CODE32		0x08
#define DATA		0x10
#define CODE64		0x18

#define MAX_CPUS	32		/* TG_MAX_CPUS in testguest.h */
#define BSP_STACK	16384
#define AP_STACK	4096		/* shift below depends on this */
#define AP_STACK_SHIFT	12

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define MSR_EFER	0xc0000080
#define EFER_LME	0x100
#define CR4_PAE		0x20
#define CR0_PE		0x1
#define CR0_PG		0x80000000
#define CR0_CD_NW	0x60000000

/* PVH note: the 32-bit physical entry point, read by the VMM. */
	.section .note.Xen, "a", @note
	.balign 4
	.long 4				/* namesz: "Xen\0" */
	.long 4				/* descsz */
	.long XEN_ELFNOTE_PHYS32_ENTRY
	.asciz "Xen"
	.long pvh_start

	.section .text.entry, "ax"
	.code32
	.globl pvh_start
pvh_start:
	cli
	cld
	lgdt gdt_desc
	mov $DATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	ljmp $CODE32, $1f
1:
	/* Zero .bss (the loader should, but do not depend on it). */
	mov $__bss_start, %edi
	mov $__bss_end, %ecx
	sub %edi, %ecx
	shr $2, %ecx
	xor %eax, %eax
	rep stosl

	/* PML4[0] -> PDPT; PDPT[0..3] -> four page directories. */
	mov $pdpt + 3, %eax
	mov %eax, pml4
	mov $pdpt, %edi
	mov $pd + 3, %eax
	mov $4, %ecx
2:	mov %eax, (%edi)
	add $4096, %eax
	add $8, %edi
	loop 2b

	/* 2048 2 MiB pages: present, writable, PS. */
	mov $pd, %edi
	mov $0x83, %eax
	mov $2048, %ecx
3:	mov %eax, (%edi)
	add $0x200000, %eax
	add $8, %edi
	loop 3b

	/* Top GiB holds MMIO (local APIC, virtio-mmio): PCD|PWT. */
	mov $pd + 3 * 4096, %edi
	mov $512, %ecx
4:	orl $0x18, (%edi)
	add $8, %edi
	loop 4b

	xor %esi, %esi			/* %esi = 0: bootstrap processor */
	jmp enter_long

/* APs: the trampoline jumps here in 32-bit mode with our GDT loaded. */
	.globl ap_entry32
ap_entry32:
	mov $DATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	mov $1, %esi			/* %esi = 1: application processor */

/* Shared by BSP and APs: the page tables are built once, by the BSP. */
enter_long:
	mov %cr4, %eax
	or $CR4_PAE, %eax
	mov %eax, %cr4
	mov $pml4, %eax
	mov %eax, %cr3
	mov $MSR_EFER, %ecx
	rdmsr
	or $EFER_LME, %eax
	wrmsr
	mov %cr0, %eax
	and $~CR0_CD_NW, %eax		/* an AP leaves INIT with caches off */
	or $(CR0_PE | CR0_PG), %eax
	mov %eax, %cr0
	ljmp $CODE64, $entry64

	.code64
entry64:
	mov $DATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	test %esi, %esi
	jnz 1f
	lea bsp_stack_top(%rip), %rsp
	mov %ebx, %edi			/* tg_main(start_info paddr) */
	call tg_main
	jmp halt_forever

	/* AP: take a stack slot; slot 0 is the BSP's. */
1:	mov $1, %eax
	lock xaddl %eax, ap_next_slot(%rip)
	cmp $MAX_CPUS, %eax
	jae halt_forever
	mov %eax, %edi
	mov %eax, %ecx
	inc %ecx
	shl $AP_STACK_SHIFT, %rcx
	lea ap_stacks(%rip), %rsp
	add %rcx, %rsp
	call ap_main

	.globl halt_forever
halt_forever:
	cli
	hlt
	jmp halt_forever

/*
 * AP trampoline, copied to TG_TRAMPOLINE and entered by SIPI in real mode
 * with CS base = its own address, so it only uses CS-relative offsets.
 */
	.code16
	.globl tramp_start, tramp_end
tramp_start:
	cli
	cld
	mov %cs, %ax
	mov %ax, %ds
	lgdtl tramp_gdt_desc - tramp_start
	mov %cr0, %eax
	or $CR0_PE, %eax
	mov %eax, %cr0
	ljmpl $CODE32, $ap_entry32
	.balign 8
tramp_gdt_desc:
	.word gdt_end - gdt - 1
	.long gdt
tramp_end:

	.code64
	.section .data
	.balign 16
gdt:
	.quad 0
	.quad 0x00cf9a000000ffff	/* 0x08: 32-bit code, flat */
	.quad 0x00cf92000000ffff	/* 0x10: data, flat */
	.quad 0x00af9a000000ffff	/* 0x18: 64-bit code */
gdt_end:
gdt_desc:
	.word gdt_end - gdt - 1
	.quad gdt

	.globl ap_next_slot
	.balign 4
ap_next_slot:
	.long 1

	.section .bss.pgtables, "aw", @nobits
	.balign 4096
pml4:	.skip 4096
pdpt:	.skip 4096
pd:	.skip 4 * 4096

/* Stacks are not zeroed at entry (see testguest.ld). */
	.section .stack, "aw", @nobits
	.balign 4096
bsp_stack:
	.skip BSP_STACK
bsp_stack_top:
ap_stacks:
	.skip (MAX_CPUS + 1) * AP_STACK

	.section .note.GNU-stack, "", @progbits
